package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr string // substring of the error; "" means no error
	}{
		// valid
		{in: "20/s", want: Rate{20, time.Second}},
		{in: "600/m", want: Rate{600, time.Minute}},
		{in: "3600/h", want: Rate{3600, time.Hour}},
		{in: "20/1s", want: Rate{20, time.Second}},
		{in: "100/10s", want: Rate{100, 10 * time.Second}},
		{in: "5/500ms", want: Rate{5, 500 * time.Millisecond}},
		{in: "5/ms", want: Rate{5, time.Millisecond}},
		{in: "7/1m30s", want: Rate{7, 90 * time.Second}},
		{in: "  20/s\n", want: Rate{20, time.Second}},
		{in: "1/24h", want: Rate{1, 24 * time.Hour}},
		{in: "1000000/s", want: Rate{MaxEvents, time.Second}}, // huge but allowed
		{in: "007/s", want: Rate{7, time.Second}},
		// zero: off
		{in: "", want: Rate{}},
		{in: "   ", want: Rate{}},
		{in: "off", want: Rate{}},
		{in: "OFF", want: Rate{}},
		// invalid
		{in: "20", wantErr: "want EVENTS/PERIOD"},
		{in: "20 per second", wantErr: "want EVENTS/PERIOD"},
		{in: "/s", wantErr: "not a whole number"},
		{in: "x/s", wantErr: "not a whole number"},
		{in: "-1/s", wantErr: "not a whole number"},
		{in: "+5/s", wantErr: "not a whole number"},
		{in: "1.5/s", wantErr: "not a whole number"},
		{in: "20 /s", wantErr: "not a whole number"},
		{in: "0/s", wantErr: "events must be 1 to 1000000"},
		{in: "20/", wantErr: "missing period"},
		{in: "20/x", wantErr: "want EVENTS/PERIOD"},
		{in: "20/S", wantErr: "want EVENTS/PERIOD"},
		{in: "20/s/s", wantErr: "want EVENTS/PERIOD"},
		{in: "20/0s", wantErr: "period must be 1ms to 24h0m0s"},
		{in: "20/-1s", wantErr: "period must be"},
		{in: "20/1us", wantErr: "period must be"},
		{in: "20/25h", wantErr: "period must be"},
		// huge
		{in: "1000001/s", wantErr: "events must be 1 to 1000000"},
		{in: "99999999999999999999999/s", wantErr: "events must be 1 to 1000000"},
		{in: "20/99999999999h", wantErr: "want EVENTS/PERIOD"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.Off() != (tt.want == Rate{}) {
				t.Fatalf("Parse(%q).Off() = %v", tt.in, got.Off())
			}
			// String reads back as the same Rate.
			back, err := Parse(got.String())
			if err != nil || back != got {
				t.Fatalf("Parse(%q.String() = %q) = %+v, %v; want %+v", tt.in, got.String(), back, err, got)
			}
		})
	}
}

func TestRateString(t *testing.T) {
	tests := []struct {
		r    Rate
		want string
	}{
		{Rate{}, "off"},
		{Rate{Events: 5}, "off"},
		{Rate{Per: time.Second}, "off"},
		{Rate{20, time.Second}, "20/s"},
		{Rate{600, time.Minute}, "600/m"},
		{Rate{3600, time.Hour}, "3600/h"},
		{Rate{100, 10 * time.Second}, "100/10s"},
		{Rate{5, 500 * time.Millisecond}, "5/500ms"},
		{Rate{1, 2 * time.Minute}, "1/2m0s"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}
