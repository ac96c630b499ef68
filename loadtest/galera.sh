#!/usr/bin/env bash
# A 3-node MariaDB Galera cluster on this machine, for load runs against
# Galera (docs/operations.md, "Galera"). The test suite starts its own
# (cluster/TestGalera); this one stays up until stopped.
#
#   bash loadtest/galera.sh up     # nodes on 127.0.0.1:13306, :13307, :13308
#   bash loadtest/galera.sh down   # stops them and deletes their data
#
# Needs the Debian packages mariadb-server, galera-4 and rsync. Run as root:
# the nodes run as the user mysql, since rsync's state-transfer daemon
# started by root would drop to nobody. Settings as in TestGalera.
set -euo pipefail

dir=${GALERA_DIR:-/tmp/flashsale-galera}
provider=/usr/lib/galera/libgalera_smm.so
sql=(13306 13307 13308)
gcomm=(14567 14577 14587)
ist=(14568 14578 14588)
sst=(14444 14454 14464)

peers="127.0.0.1:${gcomm[0]},127.0.0.1:${gcomm[1]},127.0.0.1:${gcomm[2]}"

start_node() { # start_node I [EXTRA...]
	local i=$1
	shift
	sudo_mysql() { if [ "$(id -u)" = 0 ]; then runuser -u mysql -- "$@"; else "$@"; fi; }
	sudo_mysql /usr/sbin/mariadbd --no-defaults \
		--datadir="$dir/node$i" --socket="$dir/node$i.sock" --pid-file="$dir/node$i.pid" \
		--port="${sql[$i]}" --bind-address=127.0.0.1 --skip-name-resolve \
		--innodb-buffer-pool-size=128M --max-connections=300 --innodb-log-file-size=32M \
		--wsrep_on=ON --wsrep_provider="$provider" --wsrep_cluster_name=flashsale-load \
		--wsrep_cluster_address="gcomm://$peers" --wsrep_node_address="127.0.0.1:${gcomm[$i]}" \
		--wsrep_node_name="node$i" \
		--wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:${gcomm[$i]};ist.recv_addr=127.0.0.1:${ist[$i]};gcache.size=128M" \
		--wsrep_sst_method=rsync --wsrep_sst_receive_address="127.0.0.1:${sst[$i]}" \
		--binlog_format=ROW --innodb_autoinc_lock_mode=2 --default_storage_engine=InnoDB \
		"$@" >"$dir/node$i.log" 2>&1 &
}

synced() { # synced I: the node is in a cluster of 3 and Synced
	local out
	out=$(mysql --protocol=tcp -h127.0.0.1 -P"${sql[$1]}" -uroot --batch --skip-column-names \
		-e "SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size','wsrep_local_state_comment')" 2>/dev/null) || return 1
	grep -q $'wsrep_cluster_size\t3' <<<"$out" && grep -q $'wsrep_local_state_comment\tSynced' <<<"$out"
}

case ${1:-} in
up)
	[ -e "$provider" ] || { echo "no $provider: apt-get install galera-4 rsync" >&2; exit 1; }
	mkdir -p "$dir"
	for i in 0 1 2; do mkdir -p "$dir/node$i"; done
	chown -R mysql:mysql "$dir"
	runuser -u mysql -- mariadb-install-db --no-defaults --datadir="$dir/node0" \
		--auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
	start_node 0 --wsrep-new-cluster
	for _ in $(seq 60); do mysql --protocol=tcp -h127.0.0.1 -P"${sql[0]}" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
	start_node 1
	start_node 2
	for _ in $(seq 180); do synced 0 && synced 1 && synced 2 && break; sleep 1; done
	for i in 0 1 2; do synced "$i" || { echo "node $i not Synced; see $dir/node$i.log" >&2; exit 1; }; done
	echo "Galera cluster up: 127.0.0.1:${sql[0]},127.0.0.1:${sql[1]},127.0.0.1:${sql[2]} (data in $dir)"
	;;
down)
	for i in 2 1 0; do
		[ -f "$dir/node$i.pid" ] && kill "$(cat "$dir/node$i.pid")" 2>/dev/null || true
	done
	for _ in $(seq 60); do pgrep -f "datadir=$dir/" >/dev/null || break; sleep 1; done
	pkill -9 -f "datadir=$dir/" 2>/dev/null || true
	rm -rf "$dir"
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
