#!/usr/bin/env bash
# Makes sure Debian's nginx is at /usr/sbin/nginx for the edge cache test
# (edge_test.go) and the load tool's edge scenario, which start their own
# nginx with deploy/nginx/flashsale.conf on a free port. Idempotent: it
# installs nothing when nginx is already there, and never prompts.
#
# The package's postinst would start the system nginx on port 80; nothing
# here needs it, and on a developer's machine port 80 may be taken. Debian's
# maintainer scripts start services through invoke-rc.d, which asks
# /usr/sbin/policy-rc.d first: exit code 101 forbids the start. Docker
# images already ship such a file; otherwise one is put there for the
# install only and removed after.
set -euo pipefail

nginx=/usr/sbin/nginx
if [ ! -x "$nginx" ]; then
	echo "installing nginx-light (Debian package; its system service is not started)"
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# .ci/nginx.sh: no service starts during this install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends nginx-light >/dev/null
fi
[ -x "$nginx" ] || { echo "nginx.sh: $nginx is still missing after apt-get install nginx-light" >&2; exit 1; }
"$nginx" -v
