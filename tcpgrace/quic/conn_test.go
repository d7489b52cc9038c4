//go:build linux

package quic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// testKeys are a service's keys, a new service per call.
func testKeys(t testing.TB) keys {
	var secret [32]byte
	rand.Read(secret[:])
	k := keysFrom(func(label string) [32]byte {
		var out [32]byte
		copy(out[:], label)
		for i := range out {
			out[i] ^= secret[i]
		}
		return out
	})
	return k
}

func TestIDGenerator(t *testing.T) {
	k := testKeys(t)
	g := &idGenerator{tag: 7, mac: newIDMAC(k.id)}
	mac := newIDMAC(k.id)
	seen := map[string]bool{}
	for range 100 {
		id, err := g.GenerateConnectionID()
		require.NoError(t, err)
		b := id.Bytes()
		require.Len(t, b, idLen)
		assert.Equal(t, byte(7), b[0], "the first byte is the generation's tag")
		assert.True(t, mac.ours(b), "an ID we made checks out")
		assert.False(t, seen[string(b)], "IDs do not repeat")
		seen[string(b)] = true
	}
	assert.Equal(t, idLen, g.ConnectionIDLen())
	other := newIDMAC(testKeys(t).id)
	id, _ := g.GenerateConnectionID()
	assert.False(t, other.ours(id.Bytes()), "another service's key does not take our IDs")
	random := make([]byte, idLen)
	rand.Read(random)
	random[0] = 7
	assert.False(t, mac.ours(random), "a client's random ID is not ours")
}

// TestClassify: where each kind of packet goes.
func TestClassify(t *testing.T) {
	k := testKeys(t)
	mac := newIDMAC(k.id)
	id := func(tag byte) []byte {
		b, _ := (&idGenerator{tag: tag, mac: newIDMAC(k.id)}).GenerateConnectionID()
		return b.Bytes()
	}
	short := func(id []byte) []byte { return append(append([]byte{0x40}, id...), make([]byte, 30)...) }
	long := func(id []byte) []byte {
		b := []byte{0xc0, 0, 0, 0, 1, byte(len(id))}
		return append(append(b, id...), make([]byte, 30)...)
	}
	clientID := make([]byte, 8)
	rand.Read(clientID)
	for _, tt := range []struct {
		name string
		b    []byte
		kind int
		tag  byte
	}{
		{"empty", nil, toMine, 2},
		{"short, ours", short(id(2)), toMine, 2},
		{"short, older generation's", short(id(1)), toOwner, 1},
		{"short, truncated", []byte{0x40, 1, 2}, toMine, 2},
		{"long, client's ID", long(clientID), toNewest, 2},
		{"long, client's ID of our length", long(make([]byte, idLen)), toNewest, 2},
		{"long, older generation's", long(id(1)), toOwner, 1},
		{"long, ours", long(id(2)), toMine, 2},
		{"long, truncated", []byte{0xc0, 0, 0}, toMine, 2},
		{"long, ID past the end", []byte{0xc0, 0, 0, 0, 1, 12, 1}, toNewest, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kind, tag := classify(tt.b, 2, mac)
			assert.Equal(t, tt.kind, kind)
			assert.Equal(t, tt.tag, tag)
		})
	}
}

func TestHeader(t *testing.T) {
	for _, s := range []string{"127.0.0.1:4433", "[::1]:1", "[2001:db8::5]:65535"} {
		addr := netip.MustParseAddrPort(s)
		buf := new(buffer)
		copy(buf[headRoom:], "pkt")
		start := putHeader(buf, addr)
		got, hlen, ok := parseHeader(buf[start : headRoom+3])
		require.True(t, ok, s)
		assert.Equal(t, addr, got)
		assert.Equal(t, "pkt", string(buf[start+hlen:headRoom+3]))
	}
	for _, b := range [][]byte{nil, {2, 4, 0, 0, 1, 2, 3, 4}, {1, 4, 0, 0, 1}, {1, 6, 0, 0, 1, 2}, {1, 5, 0, 0, 1, 2, 3, 4}} {
		_, _, ok := parseHeader(b)
		assert.False(t, ok, "%x is no header", b)
	}
}

// TestChannelCredentials: a frame from a sender of another uid is
// refused; one of ours or root's is taken.
func TestChannelCredentials(t *testing.T) {
	ch, err := openChannel(testKeys(t).service, 1)
	require.NoError(t, err)
	defer ch.close()
	uc := ch.(*unixChannel)
	creds := func(uid uint32) []byte {
		return unix.UnixCredentials(&unix.Ucred{Pid: 1, Uid: uid, Gid: 0})
	}
	assert.True(t, uc.allowed(creds(uc.uid)), "our uid")
	assert.True(t, uc.allowed(creds(0)), "root")
	assert.False(t, uc.allowed(creds(uc.uid+12345)), "another uid")
	assert.False(t, uc.allowed(nil), "no credentials")
}

// TestChannelGone: sending to a tag nobody has says it is gone, and a
// second channel of one tag cannot be opened.
func TestChannelGone(t *testing.T) {
	svc := testKeys(t).service
	ch, err := openChannel(svc, 1)
	require.NoError(t, err)
	defer ch.close()
	assert.ErrorIs(t, ch.send(2, []byte("x")), errGone)
	require.NoError(t, ch.send(1, []byte("to myself")))
	_, err = openChannel(svc, 1)
	assert.Error(t, err, "a tag's channel is one process's")
}

// generation is one generation in this process: its own copy of the
// shared UDP socket, its Endpoint and a QUIC server answering name.
type generation struct {
	udp *net.UDPConn
	e   *Endpoint
	ln  *quic.Listener
}

// startGeneration serves on a copy of udp as generation gen of the
// service k: every stream gets reply.
func startGeneration(t testing.TB, udp *net.UDPConn, gen int, k keys, reply string) *generation {
	t.Helper()
	f, err := udp.File()
	require.NoError(t, err)
	pc, err := net.FilePacketConn(f)
	f.Close()
	require.NoError(t, err)
	g := &generation{udp: pc.(*net.UDPConn)}
	g.e, err = newEndpoint(g.udp, gen, k)
	require.NoError(t, err)
	g.ln, err = g.e.Transport().Listen(serverTLS(t), &quic.Config{})
	require.NoError(t, err)
	go func() {
		for {
			c, err := g.ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				for {
					s, err := c.AcceptStream(context.Background())
					if err != nil {
						return
					}
					go func() {
						io.ReadAll(s)
						io.WriteString(s, reply)
						s.Close()
					}()
				}
			}()
		}
	}()
	t.Cleanup(g.close)
	return g
}

func (g *generation) close() {
	g.ln.Close()
	g.e.Close()
	g.udp.Close()
}

// handOff is what tcpgrace does to the old generation's packet conns.
func (g *generation) handOff() { g.udp.SetReadDeadline(time.Unix(1, 0)) }

// ask makes one round trip on c: the reply of the generation serving it.
func ask(ctx context.Context, c *quic.Conn) (string, error) {
	s, err := c.OpenStreamSync(ctx)
	if err != nil {
		return "", err
	}
	// 100 bytes: quic-go resets only packets over 42 bytes.
	if _, err := s.Write(make([]byte, 100)); err != nil {
		return "", err
	}
	s.Close()
	b, err := io.ReadAll(s)
	return string(b), err
}

func dial(t testing.TB, addr net.Addr) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := quic.DialAddr(ctx, addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"tcpgrace-test"}},
		&quic.Config{MaxIdleTimeout: 5 * time.Second})
	require.NoError(t, err, "dialing %s", addr)
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

func mustAsk(t *testing.T, c *quic.Conn, want, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got, err := ask(ctx, c)
	require.NoError(t, err, msg)
	assert.Equal(t, want, got, msg)
}

// TestForwarding: two generations on one UDP socket in one process. A
// connection of the old one keeps being answered by it after the new one
// took every read (forwarded), new connections go to the new one (also
// while both read), and once the old one is gone its clients get a
// stateless reset at once.
func TestForwarding(t *testing.T) {
	k := testKeys(t)
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer udp.Close()
	addr := udp.LocalAddr()
	g1 := startGeneration(t, udp, 1, k, "gen1")
	old := dial(t, addr)
	mustAsk(t, old, "gen1", "a connection of generation 1")

	g2 := startGeneration(t, udp, 2, k, "gen2")
	for range 5 { // both read: a new connection goes to the newest
		mustAsk(t, dial(t, addr), "gen2", "a new connection while both read")
		mustAsk(t, old, "gen1", "the old connection while both read")
	}
	g1.handOff()
	for range 20 {
		mustAsk(t, old, "gen1", "the old connection after the hand-off")
	}
	fresh := dial(t, addr)
	mustAsk(t, fresh, "gen2", "a new connection after the hand-off")
	s2 := g2.e.Stats()
	assert.Greater(t, s2.Forwarded, uint64(20), "generation 2 forwards generation 1's packets")
	assert.Greater(t, s2.ForwardedBytes, s2.Forwarded*20)
	assert.Greater(t, g1.e.Stats().Received, uint64(20), "generation 1 receives them")
	assert.Equal(t, uint64(0), s2.Dropped+g1.e.Stats().Dropped, "nothing dropped")
	assert.EqualValues(t, 1, g1.e.Stats().Conns, "generation 1 has one connection open")

	// Generation 1 dies without a word: its channel is gone.
	g1.e.conn.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = ask(ctx, old)
	var reset *quic.StatelessResetError
	require.ErrorAs(t, err, &reset, "the old connection ends with a stateless reset")
	assert.Less(t, time.Since(start), time.Second, "at once, not at a timeout")
	assert.Eventually(t, func() bool { return g2.e.Stats().ResetsSent > 0 }, time.Second, 5*time.Millisecond,
		"generation 2 counts the reset it sent")
	assert.Positive(t, g2.e.Stats().Orphaned)
	mustAsk(t, fresh, "gen2", "generation 2's own connection is unharmed")
}

// TestReadDeadline: ReadFrom honours quic-go's deadlines, and Close ends
// it with net.ErrClosed.
func TestReadDeadline(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer udp.Close()
	k := testKeys(t)
	ch, err := openChannel(k.service, 1)
	require.NoError(t, err)
	c := newConn(udp, ch, 1, k.id, k.reset)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err = c.ReadFrom(make([]byte, 100))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	done := make(chan error)
	c.SetReadDeadline(time.Time{})
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 100))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.SetReadDeadline(time.Now()) // what quic-go's Transport.Close does
	assert.ErrorIs(t, <-done, os.ErrDeadlineExceeded, "a deadline set meanwhile ends a blocked read")
	c.SetReadDeadline(time.Time{})
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "twice")
	_, _, err = c.ReadFrom(make([]byte, 100))
	assert.ErrorIs(t, err, net.ErrClosed)
}

func serverTLS(t testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{"tcpgrace-test"}}
}
