package mtls

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRotatedCertificatesTakeEffectOnReload(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o644)
	issue := func(name, identity string) Files {
		leaf, err := ca.Issue(identity, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		f := Files{CA: caFile, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
		if err := RotateFiles(f.Cert, leaf.CertPEM, f.Key, leaf.KeyPEM); err != nil {
			t.Fatal(err)
		}
		return f
	}
	nodeFiles := issue("node", NodeIdentity("hbs"))
	coordFiles := issue("coord", CoordinatorIdentity("region"))
	server, err := NewReloader(nodeFiles)
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewReloader(coordFiles)
	if err != nil {
		t.Fatal(err)
	}
	scfg, _ := server.ServerConfig(CoordinatorIdentity("region"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				seen <- tc.ConnectionState().PeerCertificates[0].SerialNumber.String()
			}
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	dial := func() (serverSerial, clientSerial string) {
		t.Helper()
		ccfg, _ := client.ClientConfig(NodeIdentity("hbs"))
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), ccfg)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), <-seen
	}
	s1, c1 := dial()
	if s1 != server.Leaf().SerialNumber.String() || c1 != client.Leaf().SerialNumber.String() {
		t.Fatal("the first handshake did not use the loaded certificates")
	}
	// Rotate both sides' files; until the reload the old certificates are in use.
	issue("node", NodeIdentity("hbs"))
	issue("coord", CoordinatorIdentity("region"))
	if s, c := dial(); s != s1 || c != c1 {
		t.Fatal("rotated files took effect before the reload")
	}
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := client.Reload(); err != nil {
		t.Fatal(err)
	}
	s2, c2 := dial()
	if s2 == s1 || c2 == c1 || s2 != server.Leaf().SerialNumber.String() {
		t.Fatalf("after the reload the handshake used %s/%s, before %s/%s", s2, c2, s1, c1)
	}
	// A broken file is refused and the certificate in use stays.
	os.WriteFile(nodeFiles.Cert, []byte("not a certificate"), 0o644)
	if err := server.Reload(); err == nil {
		t.Fatal("a broken certificate file was loaded")
	}
	if s, _ := dial(); s != s2 {
		t.Fatal("a failed reload changed the certificate in use")
	}
	if fi, err := os.Stat(nodeFiles.Key + ".prev"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the previous key: %v %v", err, fi)
	}
}
