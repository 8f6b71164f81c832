package servicetest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kubespawn/kubespawn/examples/internal/service"
)

// TestDoSendsJSONBodies: a body goes as application/json (the services
// refuse others) unless the header says otherwise; no body, no type.
// NewServer applies the programs' checks.
func TestDoSendsJSONBodies(t *testing.T) {
	ts := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		service.WriteJSON(w, http.StatusOK, map[string]string{"contentType": r.Header.Get("Content-Type")})
	}), service.ServerOptions{})
	defer ts.Close()
	code, _, b := Do(t, http.MethodPost, ts.URL, strings.NewReader(`{}`), nil)
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"contentType":"application/json"}`, string(b))
	code, _, b = Do(t, http.MethodGet, ts.URL, nil, nil)
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"contentType":""}`, string(b))
	code, _, _ = Do(t, http.MethodPost, ts.URL, strings.NewReader(`{}`), http.Header{"Content-Type": {"text/plain"}})
	assert.Equal(t, http.StatusUnsupportedMediaType, code, "the header wins; NewServer refuses it")
	code, _, _ = Do(t, http.MethodGet, ts.URL, nil, http.Header{"Sec-Fetch-Site": {"cross-site"}})
	assert.Equal(t, http.StatusForbidden, code)
}
