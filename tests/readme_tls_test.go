package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeTLSProgram writes, in the readme module of dir, the program the
// README's TLS section describes: its HTTP program with everything from
// its Ready on replaced by the TLS fragment. It returns the binary.
func readmeTLSProgram(t *testing.T, dir string) string {
	t.Helper()
	readme, blocks := readmeBlocks(t)
	var fragment *readmeBlock
	for i, b := range blocks {
		if b.kind == readmeFragment && strings.Contains(b.code, "tls.NewListener") {
			fragment = &blocks[i]
		}
	}
	require.NotNil(t, fragment, "README.md has a fragment that serves through tls.NewListener")
	program := string(readFile(t, filepath.Join(dir, readmePrograms[readmeHTTPProgram], "main.go")))
	cut := strings.Index(program, "\tif err := u.Ready();")
	require.Positive(t, cut, "the README's HTTP program calls u.Ready()")
	require.True(t, strings.Contains(program, "import (\n"), "the README's HTTP program has an import block")
	program = strings.Replace(program[:cut], "import (\n", "import (\n\t\"crypto/tls\"\n", 1)
	program += fmt.Sprintf("//line %s:%d\n%s}\n", readme, fragment.line, fragment.code)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "tls"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tls", "main.go"), []byte(program), 0o644))
	bin := filepath.Join(dir, "readme-tls")
	cmd := exec.Command("go", "build", "-o", bin, "./tls")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build of the README's HTTP program with its TLS fragment:\n%s", out)
	return bin
}

// TestReadmeTLSProgram runs the README's HTTP program with its TLS
// fragment in place (issue #20): it answers GET / over HTTPS with its
// pid, and on SIGUSR1 the new process, which inherited the same socket
// and read the certificate files itself, answers over HTTPS; the old one
// exits 0, and SIGTERM drains the new one, which exits 0.
func TestReadmeTLSProgram(t *testing.T) {
	bin := readmeTLSProgram(t, filepath.Dir(readmeModule(t, readmeHTTPProgram)))
	dir := t.TempDir()
	pool := writeSelfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	addr, pidFile := freeAddr(t), filepath.Join(dir, "web.pid")
	r := startReadme(t, "README TLS program", bin, dir, pidFile, "-addr", addr, "-pidfile", pidFile, "-ready-grace", "0")
	first, logs, cmd, pidNow := r.first, r.logs, r.cmd, r.pidNow
	waitFor(t, fmt.Sprintf("the pid file to name %d\noutput:\n%s", first, logs), func() bool { return pidNow() == first })
	require.Equal(t, first, readmeGetTLS(t, pool, addr, first), "the TLS program answers GET / over HTTPS with its pid")

	require.NoError(t, syscall.Kill(first, syscall.SIGUSR1))
	var next int
	waitFor(t, fmt.Sprintf("a new process in the pid file after SIGUSR1\noutput:\n%s", logs), func() bool {
		next = pidNow()
		return next != 0 && next != first
	})
	r.pids = append(r.pids, next)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the old process exits 0 after the upgrade")
	case <-time.After(waitTimeout):
		t.Fatal("the old process did not exit after the upgrade")
	}
	assert.Equal(t, next, readmeGetTLS(t, pool, addr, next), "the new process serves HTTPS alone")

	require.NoError(t, syscall.Kill(next, syscall.SIGTERM))
	ws, err := reap(next, waitTimeout)
	require.NoError(t, err, "reaping the new process after SIGTERM")
	require.True(t, ws.Exited() && ws.ExitStatus() == 0, "the new process exits 0 after SIGTERM, not %v", ws)
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key as PEM files, and returns a pool that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "readme"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// readmeGetTLS sends GET / over HTTPS (trusting pool) to addr on a new
// connection and returns the pid in the answer, which must be one of pids.
func readmeGetTLS(t *testing.T, pool *x509.CertPool, addr string, pids ...int) int {
	t.Helper()
	client := &http.Client{Timeout: requestBudget, Transport: &http.Transport{
		DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool},
	}}
	resp, err := client.Get("https://" + addr + "/")
	require.NoError(t, err, "GET / over HTTPS from the README TLS program")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "reading the README TLS program's answer")
	return answeringPID(t, string(body), pids)
}
