package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
)

// Reloader holds a peer's certificate, key and CA from their files and reloads them on
// demand (a daemon calls Reload on SIGHUP): rotated certificates take effect for every new
// handshake without a restart, and connections already open carry on. A reload that fails
// keeps what was loaded before.
type Reloader struct {
	f    Files
	mu   sync.RWMutex
	pool *x509.CertPool
	pair *tls.Certificate
}

// NewReloader loads f.
func NewReloader(f Files) (*Reloader, error) {
	r := &Reloader{f: f}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again.
func (r *Reloader) Reload() error {
	pool, pair, err := r.f.load()
	if err != nil {
		return err
	}
	if len(pair.Certificate) == 0 {
		return errors.New("reload: no certificate")
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	pair.Leaf = leaf
	r.mu.Lock()
	r.pool, r.pair = pool, &pair
	r.mu.Unlock()
	return nil
}

// Leaf is the certificate in use.
func (r *Reloader) Leaf() *x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pair.Leaf
}

func (r *Reloader) current() (*x509.CertPool, *tls.Certificate) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pool, r.pair
}

// ServerConfig is ServerConfig with the reloadable certificate and CA: every handshake uses
// what was loaded last.
func (r *Reloader) ServerConfig(allowedClients ...string) (*tls.Config, error) {
	if len(allowedClients) == 0 {
		return nil, errors.New("server TLS: no allowed client identity")
	}
	base := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, pair := r.current()
		return &tls.Config{
			MinVersion:            tls.VersionTLS13,
			Certificates:          []tls.Certificate{*pair},
			ClientCAs:             pool,
			ClientAuth:            tls.RequireAndVerifyClientCert,
			VerifyPeerCertificate: requireIdentity(allowedClients),
			NextProtos:            []string{"h2"},
		}, nil
	}
	return base, nil
}

// ClientConfig is ClientConfig with the reloadable certificate and CA.
func (r *Reloader) ClientConfig(serverIdentity string) (*tls.Config, error) {
	pool, pair := r.current()
	cfg := clientConfig(pool, *pair, serverIdentity)
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		_, p := r.current()
		return p, nil
	}
	cfg.VerifyPeerCertificate = verifyServer(func() *x509.CertPool { p, _ := r.current(); return p }, serverIdentity)
	return cfg, nil
}
