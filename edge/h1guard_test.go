package edge

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// chunkConn is a net.Conn whose reads return at most k bytes of data, so
// that every split of the input across reads is exercised.
type chunkConn struct {
	net.Conn // nil: only Read is used
	data     string
	k        int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if c.data == "" {
		return 0, io.EOF
	}
	n := min(c.k, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// readAllGuarded reads everything the guard lets through, with reads of
// size r.
func readAllGuarded(in string, k, r int) (string, error) {
	c := &h1Conn{Conn: &chunkConn{data: in, k: k}, maxHeader: 1 << 16}
	var out strings.Builder
	buf := make([]byte, r)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.String(), nil
		}
		if err != nil {
			return out.String(), err
		}
	}
}

func TestH1GuardFraming(t *testing.T) {
	const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name    string
		in      string
		refused string // "": everything passes; else what passes before the refusal
	}{
		{"two GETs", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"Content-Length body holding a fake request", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 33\r\n\r\n" + smuggled + "GET / HTTP/1.1\r\n\n", ""},
		{"chunked with extension and trailer", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1A\r\n" + strings.Repeat("z", 26) + "\r\n0\r\nT: v\r\n\r\n" + smuggled, ""},
		{"bare LF line ends", "GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\nHost: x\n\n", ""},
		{"blank lines between requests", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", ""},
		{"HTTP/2 prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
		{"upgrade leaves HTTP/1.1", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
		{"a folded line is not a header", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", ""},
		{"CL then TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			"POST / HTTP/1.1\r\n"},
		{"te then cl, any case", "POST / HTTP/1.1\r\nHost: x\r\ntransfer-ENCODING: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n" + smuggled,
			"POST / HTTP/1.1\r\n"},
		{"after a chunked request", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST /2 HTTP/1.1\r\n"},
		{"hidden in a Content-Length body is not a request", "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k := 1; k <= len(tc.in); k++ {
				for _, r := range []int{1, 7, 4096} {
					got, err := readAllGuarded(tc.in, k, r)
					if tc.refused == "" {
						if err != nil || got != tc.in {
							t.Fatalf("reads of %d, %d: got %q, %v; want every byte through", k, r, got, err)
						}
						continue
					}
					if r == 1 {
						continue // a one-byte read is net/http's background read, never refused
					}
					if !errors.Is(err, errSmuggling) || got != tc.refused {
						t.Fatalf("reads of %d, %d: got %q, %v; want %q then the refusal", k, r, got, err, tc.refused)
					}
				}
			}
		})
	}
}

// TestH1GuardServer runs net/http behind the guard over loopback: a
// pipelined client gets its clean requests answered, the smuggling one
// refused with 400, and the connection closed; nothing after it is served.
func TestH1GuardServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan string, 10)
	refused := make(chan error, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		served <- r.Method + " " + r.URL.Path + " " + string(b)
		time.Sleep(20 * time.Millisecond) // net/http's background read runs meanwhile
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		_ = srv.Serve(&h1Listener{Listener: lis, maxHeader: 1 << 16, onRefuse: func(_ net.Addr, err error) { refused <- err }})
	}()
	defer srv.Close()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"+
		"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var statuses []int
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("after %v: %v, want the connection closed", statuses, err)
			}
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		statuses = append(statuses, resp.StatusCode)
	}
	if want := []int{200, 200, 400}; len(statuses) != 3 || statuses[0] != want[0] || statuses[1] != want[1] || statuses[2] != want[2] {
		t.Errorf("statuses %v, want %v then closed", statuses, want)
	}
	var got []string
	for len(served) > 0 {
		got = append(got, <-served)
	}
	if strings.Join(got, "|") != "GET /a |POST /b body" {
		t.Errorf("served %q, want GET /a and POST /b only", got)
	}
	// One request at a time on a kept-alive connection: net/http's
	// background read during the first is aborted with a deadline, which
	// must not end the guard's tracking.
	c2, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	br2 := bufio.NewReader(c2)
	for i, req := range []string{
		"GET /first HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
	} {
		time.Sleep(50 * time.Millisecond) // after the background read's abort
		_, _ = io.WriteString(c2, req)
		resp, err := http.ReadResponse(br2, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if want := []int{200, 400}[i]; resp.StatusCode != want {
			t.Errorf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	select {
	case err := <-refused:
		if !errors.Is(err, errSmuggling) {
			t.Errorf("refused with %v", err)
		}
	default:
		t.Error("the refusal was not reported")
	}
}

// FuzzH1Guard checks the guard never alters what it lets through: the
// bytes net/http reads are always a prefix of what the client sent (all of
// it unless a request was refused), however the input splits across reads.
func FuzzH1Guard(f *testing.F) {
	f.Add("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n", uint8(3))
	f.Add("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", uint8(1))
	f.Add("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", uint8(5))
	f.Add("GET / HTTP/1.1\nUpgrade: websocket\n\n", uint8(2))
	f.Fuzz(func(t *testing.T, in string, k uint8) {
		got, err := readAllGuarded(in, int(k)%64+1, 4096)
		if !strings.HasPrefix(in, got) {
			t.Fatalf("let through %q, not a prefix of %q", got, in)
		}
		if err == nil && got != in {
			t.Fatalf("let through %q of %q with no refusal", got, in)
		}
		if err != nil && !errors.Is(err, errSmuggling) {
			t.Fatalf("error %v", err)
		}
	})
}

// A client that stops reading makes the guard's writes fail within about
// the write timeout, also after net/http cleared the deadline (it does
// after every HTTP/1.1 request); one that reads is never cut off.
func TestH1GuardWriteTimeout(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	gl := &h1Listener{Listener: lis, maxHeader: 1 << 16, writeTimeout: 200 * time.Millisecond}
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := gl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	// The client reads: writes spread over more than the timeout succeed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, client)
	}()
	chunk := make([]byte, 64<<10)
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		if _, err := server.Write(chunk); err != nil {
			t.Fatalf("write to a reading client: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// net/http clears the deadline between requests.
	_ = server.SetWriteDeadline(time.Time{})

	// A client that stops reading.
	_ = client.(*net.TCPConn).SetReadBuffer(4 << 10)
	client2, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Close()
	server2, err := gl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server2.Close()
	if _, err := server2.Write(chunk[:1]); err != nil { // arms the deadline
		t.Fatal(err)
	}
	_ = server2.SetWriteDeadline(time.Time{}) // as net/http does: must re-arm
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := server2.Write(chunk); err != nil {
				errc <- err
				return
			}
		}
	}()
	var werr error
	select {
	case werr = <-errc:
	case <-time.After(10 * time.Second):
		_ = server2.Close()
		t.Fatal("a write to a client that does not read blocked for 10s")
	}
	var ne net.Error
	if !errors.As(werr, &ne) || !ne.Timeout() {
		t.Fatalf("writes to a client that does not read: %v after %v, want a timeout", werr, time.Since(start))
	}
	t.Logf("write timed out after %v", time.Since(start).Round(time.Millisecond))
	_ = client.Close()
	<-done
}
