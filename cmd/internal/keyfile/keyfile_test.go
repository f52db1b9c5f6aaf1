package keyfile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateAndLoad(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "authority.key"), filepath.Join(dir, "authority.pub")
	pub, err := Generate(privPath, pubPath)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{privPath: 0o600, pubPath: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), want)
		}
	}
	priv, err := LoadPrivate(privPath)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadPublic(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Equal(pub) || !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("loaded keys do not match the generated pair")
	}
	msg := []byte("samsyn")
	if !ed25519.Verify(loaded, msg, ed25519.Sign(priv, msg)) {
		t.Fatal("loaded keys do not sign and verify")
	}
	raw, err := os.ReadFile(privPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Fatalf("private key file does not start with a PRIVATE KEY block")
	}
}

func TestGenerateRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if _, err := Generate(privPath, pubPath); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(privPath)
	if _, err := Generate(privPath, filepath.Join(dir, "other.pub")); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second Generate over the private key: %v", err)
	}
	if _, err := Generate(filepath.Join(dir, "other.key"), pubPath); err == nil {
		t.Fatal("Generate overwrote a public key")
	}
	if _, err := os.Stat(filepath.Join(dir, "other.key")); !os.IsNotExist(err) {
		t.Fatal("a refused Generate left a private key behind")
	}
	after, _ := os.ReadFile(privPath)
	if !bytes.Equal(before, after) {
		t.Fatal("the private key changed")
	}
}

func TestLoadPrivateRefusesOpenModes(t *testing.T) {
	dir := t.TempDir()
	privPath := filepath.Join(dir, "k.key")
	if _, err := Generate(privPath, filepath.Join(dir, "k.pub")); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(privPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadPrivate(privPath)
		if err == nil {
			t.Fatalf("mode %04o accepted", mode)
		}
		for _, want := range []string{privPath, fmt.Sprintf("mode %04o", mode), "chmod 600 " + privPath} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("mode %04o: error %q does not mention %q", mode, err, want)
			}
		}
	}
	if err := os.Chmod(privPath, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivate(privPath); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	edPubDER, _ := x509.MarshalPKIXPublicKey(edPriv.Public())
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	secretLooking := block("PRIVATE KEY", []byte("TOPSECRETBYTES"))

	tests := []struct {
		name    string
		private bool
		data    []byte
		want    string
	}{
		{"private: missing file", true, nil, "no such file"},
		{"private: not PEM", true, []byte("hello"), `no PEM block: expected one PEM "PRIVATE KEY" block`},
		{"private: public key given", true, block("PUBLIC KEY", edPubDER), "this is a public key (.pub); give the private key (.key) beside it"},
		{"private: ecdsa key", true, block("PRIVATE KEY", ecDER), "expected an ed25519 key"},
		{"private: garbage DER", true, secretLooking, "not a PKCS#8 private key"},
		{"private: two blocks", true, append(block("PRIVATE KEY", edDER), block("PRIVATE KEY", edDER)...), "expected exactly one block"},
		{"public: private key given", false, block("PRIVATE KEY", edDER), `PEM block of type "PRIVATE KEY", expected "PUBLIC KEY"`},
		{"public: ecdsa key", false, block("PUBLIC KEY", ecPubDER), "expected an ed25519 key"},
		{"public: garbage DER", false, block("PUBLIC KEY", []byte("TOPSECRETBYTES")), "not a PKIX public key"},
		{"public: too large", false, bytes.Repeat([]byte(" "), maxSize+1), "larger than"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing")
			if tc.data != nil {
				path = write(strings.Repeat("f", i+1), tc.data)
			}
			var err error
			if tc.private {
				_, err = LoadPrivate(path)
			} else {
				_, err = LoadPublic(path)
			}
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want it to name %s and say %q", err, path, tc.want)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error repeats the file's content: %q", err)
			}
		})
	}
}
