package zone

import (
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/petrel-net/petrel/dns/internal/state"
)

func TestDbgTmp(t *testing.T) {
	f, _ := os.Open("/tmp/dnssmoke/state1k.json")
	st, _ := state.Decode(f)
	f.Close()
	z := New(Options{Domain: "mesos", SOAMname: "ns1.mesos.", Sources: []string{"petrel", "netinfo", "mesos", "host"}})
	z.UpdateState(st)
	next := z.buildUnits(st)
	n := 0
	for k, u := range next {
		if tu, ok := u.(*taskUnit); ok {
			tu.IPs = z.taskIPsLocked(tu)
		}
		if !reflect.DeepEqual(z.units[k], u) {
			if n < 2 {
				t.Logf("%s:\n%#v\n%#v", k, z.units[k], u)
			}
			n++
		}
	}
	fmt.Println("differ", n)
}
