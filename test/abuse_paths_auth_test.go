package test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// edgeCasePaths are the path edge cases both path tests send: "%2F" in a
// one-segment variable, "..", ".", "//", "%2e", mixed-case and double
// escapes, NUL, CRLF, a parameter, UTF-8 and bytes that are not.
var edgeCasePaths = []string{
	"/v1/books/1",
	"/v1/books/a%2Fb",
	"/v1/books/a%2fb",
	"/v1/books/..%2Fadmin",
	"/v1/books/%2e%2e",
	"/v1/books/%2E%2e",
	"/v1/books/../books/1",
	"/v1/books/./1",
	"/v1/books//1",
	"/v1//books/1",
	"/v1/books/1/",
	"/v1/books/%252F",
	"/v1/BOOKS/1",
	"/v1/books/%31",
	"/v1/books/1%00",
	"/v1/books/1;x=y",
	"/v1/books/%C3%A9",
	"/v1/books/%FF",
	"/v1/books/%0d%0aX-Api-Key:%20k-paths",
	"/v1/books/1?view=%FF",
}

// booksRoutes is the routes block of the path tests: GET /v1/books/{one
// segment} goes to backend b with routeExtra added to the route, anything
// else is denied at the edge.
func booksRoutes(routeExtra string) string {
	return `routes:
  - name: books-get
    match: { http_method: "GET", path: { regex: "/v1/books/[^/]+" } }
    backend: b
` + routeExtra + `  - name: deny
    match: { service: "*" }
    direct_response: { code: "PERMISSION_DENIED", message: "denied" }
`
}

// TestAbusePathsAuthorization sends path edge cases (%2F in a one-segment
// variable, "..", "//", "%2e", mixed-case escapes) to a gateway where only
// an authenticated caller may read one book and everything else is denied.
// What authorization decides and what the backend is asked for must be the
// same thing: a path that the anonymous caller is refused for (401) is one
// whose authenticated call reaches GetBook with exactly one segment as its
// id; a path that reaches no route is denied for both; and no path slips
// past authentication to the backend.
func TestAbusePathsAuthorization(t *testing.T) {
	b := startCountingBackend(t)
	sum := sha256.Sum256([]byte("k-paths"))
	cfg := abuseConfig(b)
	cfg = cfg[:strings.Index(cfg, "routes:")] + fmt.Sprintf(`authentication:
  api_keys:
    - { name: keys, header: x-api-key, keys: [{ id: reader, sha256: %s }] }
`, hex.EncodeToString(sum[:])) + booksRoutes(`    auth: { require: ["keys"] }
`)
	g := startGateway(t, cfg, withDemoREST())
	base := "http://" + g.Addr("shared").String()
	for _, p := range edgeCasePaths {
		t.Run(p, func(t *testing.T) {
			b.handled.Store(0)
			anon := getAsWritten(t, base, p, "")
			anonCalls := b.handled.Load()
			b.mu.Lock()
			b.lastID = "<none>"
			b.mu.Unlock()
			authed := getAsWritten(t, base, p, "k-paths")
			authedCalls := b.handled.Load() - anonCalls
			b.mu.Lock()
			id := b.lastID
			b.mu.Unlock()
			logCase(t, "path+auth "+p, fmt.Sprintf("anonymous %d, with key %d (backend calls %d, GetBook id %q)", anon, authed, authedCalls, id))
			if anonCalls != 0 {
				t.Errorf("an anonymous call reached the backend (%d calls, status %d)", anonCalls, anon)
			}
			if authedCalls > 0 && (id == "<none>" || id == "" || strings.Contains(id, "/")) {
				t.Errorf("backend was asked for id %q, which the route's one-segment check did not see", id)
			}
			// Authentication is asked for exactly when the authenticated
			// call is routed to the backend by books-get.
			if (anon == http.StatusUnauthorized) != (authedCalls > 0) {
				t.Errorf("anonymous %d but the call with a key made %d backend calls: authorization and routing disagree", anon, authedCalls)
			}
			if authedCalls == 0 && authed == http.StatusOK {
				t.Errorf("200 with a key but no backend call")
			}
			if anon >= 500 || authed >= 500 {
				t.Errorf("a path the client chose is a client error, not %d / %d", anon, authed)
			}
		})
	}
}

// getAsWritten sends GET base+p with the path exactly as written (no
// cleaning or re-escaping by the client) and, when key is set, an x-api-key
// header; it returns the status code.
func getAsWritten(t *testing.T, base, p, key string) int {
	t.Helper()
	req, err := http.NewRequest("GET", base+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(p, "?")
	req.URL.Opaque = "//" + req.URL.Host + path
	req.URL.RawQuery = query
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Logf("%s: %d %s", p, resp.StatusCode, body)
	}
	return resp.StatusCode
}
