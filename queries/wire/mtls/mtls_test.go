package mtls

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// peer writes a leaf of ca for identity and returns its files.
func peer(t *testing.T, ca *CA, caFile, identity string) Files {
	t.Helper()
	leaf, err := ca.Issue(identity, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := Files{CA: caFile, Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
	if err := WriteFiles(f.Cert, leaf.CertPEM, f.Key, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return f
}

func newCA(t *testing.T) (*CA, string) {
	t.Helper()
	ca, err := NewCA("test federation", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca, path
}

// handshake runs one TLS handshake on loopback and returns the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		done <- err
	}()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadFull(conn, make([]byte, 2))
		conn.Close()
	}
	serr := <-done
	if err == nil {
		err = serr
	}
	return err
}

func TestOnlyTheExpectedPeersConnect(t *testing.T) {
	ca, caFile := newCA(t)
	other, otherFile := newCA(t)
	node := peer(t, ca, caFile, NodeIdentity("hbs"))
	coord := peer(t, ca, caFile, CoordinatorIdentity("region"))
	intruder := peer(t, ca, caFile, NodeIdentity("varna"))
	foreign := peer(t, other, otherFile, CoordinatorIdentity("region"))

	server, err := ServerConfig(node, CoordinatorIdentity("region"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(f Files, want string) *tls.Config {
		c, err := ClientConfig(f, want)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := handshake(t, server, client(coord, NodeIdentity("hbs"))); err != nil {
		t.Fatalf("coordinator refused: %v", err)
	}
	if err := handshake(t, server, client(intruder, NodeIdentity("hbs"))); err == nil {
		t.Fatal("a node certificate was accepted as the coordinator")
	}
	if err := handshake(t, server, client(foreign, NodeIdentity("hbs"))); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	if err := handshake(t, server, client(coord, NodeIdentity("varna"))); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Fatalf("the client accepted the wrong server: %v", err)
	}
	noCert := &tls.Config{RootCAs: client(coord, "").RootCAs, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if err := handshake(t, server, noCert); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	_ = other
}

func TestKeysArePrivate(t *testing.T) {
	ca, caFile := newCA(t)
	f := peer(t, ca, caFile, NodeIdentity("hbs"))
	if err := os.Chmod(f.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ServerConfig(f, CoordinatorIdentity("x")); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable key was used: %v", err)
	}
	if err := WriteFiles(f.Cert, nil, f.Key, nil); err == nil {
		t.Fatal("overwrote a certificate")
	}
}
