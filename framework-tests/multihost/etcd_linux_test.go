package multihost

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etcdBinary is Debian's etcd-server.
const etcdBinary = "/usr/bin/etcd"

// tlsFiles are PEM files made for one test.
type tlsFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// etcdCluster is a real 3-member etcd cluster of separate processes on
// 127.0.0.1, stopped by PID in t.Cleanup.
type etcdCluster struct {
	t         testing.TB
	members   []*etcdMember
	tls       *tlsFiles
	Endpoints []string
}

type etcdMember struct {
	name      string
	clientURL string
	cmd       *exec.Cmd
	done      chan struct{}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return out
}

// startEtcdCluster starts three members; with withTLS clients must present a
// certificate signed by a CA made for this test.
func startEtcdCluster(t testing.TB, withTLS bool) *etcdCluster {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		t.Fatalf("%s missing (apt-get install etcd-server): %v", etcdBinary, err)
	}
	dir := t.TempDir()
	if base := os.Getenv("PETREL_ETCD_DIR"); base != "" {
		// Lets a benchmark put the members' data on tmpfs (/dev/shm) to
		// take the machine's disk out of the figures.
		d, err := os.MkdirTemp(base, "petrel-etcd-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		dir = d
	}
	ec := &etcdCluster{t: t}
	scheme := "http"
	if withTLS {
		ec.tls = makeCerts(t, dir)
		scheme = "https"
	}
	ports := freePorts(t, 6)
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, ports[2*i+1]))
	}
	for i := range 3 {
		m := &etcdMember{
			name:      fmt.Sprintf("m%d", i),
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			done:      make(chan struct{}),
		}
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		args := []string{
			"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "petrel-" + filepath.Base(dir),
			"--logger", "zap", "--log-level", "warn",
		}
		if withTLS {
			args = append(args, "--cert-file", ec.tls.ServerCert, "--key-file", ec.tls.ServerKey,
				"--trusted-ca-file", ec.tls.CA, "--client-cert-auth")
		}
		log, err := os.Create(filepath.Join(dir, m.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		m.cmd = exec.Command(etcdBinary, args...)
		m.cmd.Stdout, m.cmd.Stderr = log, log
		if err := m.cmd.Start(); err != nil {
			t.Fatalf("start etcd %s: %v", m.name, err)
		}
		go func() { _ = m.cmd.Wait(); _ = log.Close(); close(m.done) }()
		ec.members = append(ec.members, m)
		ec.Endpoints = append(ec.Endpoints, m.clientURL)
		t.Cleanup(func() { m.kill() })
	}
	ec.waitHealthy(t)
	return ec
}

// kill stops a member by PID and waits for it.
func (m *etcdMember) kill() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Kill()
	<-m.done
}

// etcdctl runs etcdctl against the given endpoints.
func (ec *etcdCluster) etcdctl(endpoints []string, args ...string) (string, error) {
	base := []string{"--endpoints", strings.Join(endpoints, ","), "--command-timeout", "3s"}
	if ec.tls != nil {
		base = append(base, "--cacert", ec.tls.CA, "--cert", ec.tls.ClientCert, "--key", ec.tls.ClientKey)
	}
	cmd := exec.Command("etcdctl", append(base, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (ec *etcdCluster) waitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := ec.etcdctl(ec.Endpoints, "endpoint", "health")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not healthy in 60s: %v: %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentFlags are the petreld flags that point it at this cluster.
func (ec *etcdCluster) agentFlags() []string {
	f := []string{"--etcd-endpoints", strings.Join(ec.Endpoints, ",")}
	if ec.tls != nil {
		f = append(f, "--etcd-ca", ec.tls.CA, "--etcd-cert", ec.tls.ClientCert, "--etcd-key", ec.tls.ClientKey)
	}
	return f
}

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all made for this test.
func makeCerts(t testing.TB, dir string) *tlsFiles {
	t.Helper()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "petrel test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	f := &tlsFiles{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, f.CA, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		cp, kp := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, cp, "CERTIFICATE", der)
		writePEM(t, kp, "EC PRIVATE KEY", kb)
		return cp, kp
	}
	f.ServerCert, f.ServerKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	f.ClientCert, f.ClientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return f
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
