package keyfile

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const (
	privateType = "PRIVATE KEY"
	publicType  = "PUBLIC KEY"
	// maxSize bounds a key file: an ed25519 key in PEM is about 120 bytes.
	maxSize = 16 << 10
)

// Generate creates an ed25519 key pair and writes the private key to privPath (mode 0600)
// and the public key to pubPath (mode 0644). It refuses to overwrite either file; if writing
// the public key fails, it removes the private key it has just written.
func Generate(privPath, pubPath string) (ed25519.PublicKey, error) {
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("generate key: %s already exists: refusing to overwrite a key file", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate key: encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("generate key: encode public key: %w", err)
	}
	if err := writeNew(privPath, pem.EncodeToMemory(&pem.Block{Type: privateType, Bytes: privDER}), 0o600); err != nil {
		return nil, fmt.Errorf("write private key: %w", err)
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: publicType, Bytes: pubDER}), 0o644); err != nil {
		return nil, errors.Join(fmt.Errorf("write public key: %w", err), os.Remove(privPath))
	}
	return pub, nil
}

// writeNew creates path with exactly mode perm (whatever the umask), writes data and syncs.
func writeNew(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists: refusing to overwrite a key file", path)
		}
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", path, cerr)
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// LoadPrivate reads an ed25519 private key from a PEM "PRIVATE KEY" (PKCS#8) file. It refuses
// a file that its group or others may read or write.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load private key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if head, _ := io.ReadAll(io.LimitReader(f, 64)); strings.Contains(string(head), "PUBLIC KEY") {
			return nil, fmt.Errorf("load private key %s: this is a public key (.pub); give the private key (.key) beside it", path)
		}
		return nil, fmt.Errorf("load private key %s: mode %04o lets group or others read it: run chmod 600 %s", path, perm, path)
	}
	der, err := readPEM(f, privateType)
	if err != nil {
		if strings.Contains(err.Error(), "PUBLIC KEY") {
			return nil, fmt.Errorf("load private key %s: this is a public key (.pub); give the private key (.key) beside it", path)
		}
		return nil, fmt.Errorf("load private key %s: %w", path, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("load private key %s: not a PKCS#8 private key", path)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load private key %s: a %T, expected an ed25519 key", path, key)
	}
	return priv, nil
}

// LoadPublic reads an ed25519 public key from a PEM "PUBLIC KEY" (PKIX) file.
func LoadPublic(path string) (ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	defer func() { _ = f.Close() }()
	der, err := readPEM(f, publicType)
	if err != nil {
		return nil, fmt.Errorf("load public key %s: %w", path, err)
	}
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("load public key %s: not a PKIX public key", path)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("load public key %s: a %T, expected an ed25519 key", path, key)
	}
	return pub, nil
}

// readPEM reads exactly one PEM block of type want, with nothing but white space around it.
// Its errors never quote the file's content.
func readPEM(r io.Reader, want string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSize {
		return nil, fmt.Errorf("larger than %d bytes: expected one PEM %q block", maxSize, want)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block: expected one PEM %q block", want)
	}
	if block.Type != want {
		return nil, fmt.Errorf("PEM block of type %q, expected %q", block.Type, want)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("PEM block with headers (encrypted?), expected a plain %q block", want)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("content after the %q block: expected exactly one block", want)
	}
	return block.Bytes, nil
}
