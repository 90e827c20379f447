package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ems-broker/ems/fhir"
	"github.com/ems-broker/ems/identity"
)

// testCA issues certificates for the mutual-TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate and key signed by the CA, as PEM.
func (ca *testCA) issue(t *testing.T, cn string, uris []string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	for _, u := range uris {
		p, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, p)
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestSecurityMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "EMS test CA")
	rogue := newTestCA(t, "Rogue CA")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvCert, srvKey := ca.issue(t, "ems.test", nil, true)
	write("server.pem", srvCert)
	write("server.key", srvKey)
	write("ca.pem", ca.pem)
	subAURI := "urn:nhs:asid:" + secSubA
	extra := "  tls:\n    cert_file: " + filepath.Join(dir, "server.pem") + "\n    key_file: " + filepath.Join(dir, "server.key") +
		"\n    client_ca_file: " + filepath.Join(dir, "ca.pem") + "\n    require_client_cert: true\n    cert_asids:\n      \"" + subAURI + "\": \"" + secSubA + "\"\n"

	s := startSecure(t, true, extra)
	base := "https://" + s.e.readyField("http")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := func(c *testCA, cn string, uris ...string) *http.Client {
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if c != nil {
			certPEM, keyPEM := c.issue(t, cn, uris, false)
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	}
	unsigned := func(asid, ods string) string {
		tok, err := identity.Sign(identity.AlgNone, nil, claims(asid, ods, identity.SubscriptionReadScope), nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	get := func(c *http.Client, asid, ods string) (*http.Response, string, error) {
		req, _ := http.NewRequest(http.MethodGet, base+"/STU3/Subscription", nil)
		for k, v := range spine(asid, identity.SubscriptionGetAction, unsigned(asid, ods)) {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp, b.String(), nil
	}

	// The certificate of SUBA, used as SUBA: accepted.
	subA := client(ca, "suba.test", subAURI)
	if resp, body, err := get(subA, secSubA, "SUBA"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("SUBA with its certificate: %v %v %s", err, resp, body)
	}
	// SUBA's certificate claiming to be SUBB (with a token SUBB's
	// headers agree with): the certificate wins.
	resp, body, err := get(subA, secSubB, "SUBB")
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "SUBA's certificate as SUBB", resp, body, 403, fhir.ASIDCheckFailed)
	// A certificate of the right CA that maps to no ASID.
	resp, body, err = get(client(ca, "nobody.test"), secSubB, "SUBB")
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "unmapped certificate", resp, body, 403, fhir.ASIDCheckFailed)
	// No certificate, or one from another CA: the handshake fails.
	for name, c := range map[string]*http.Client{"no certificate": client(nil, ""), "rogue CA": client(rogue, "suba.test", subAURI)} {
		if resp, body, err := get(c, secSubA, "SUBA"); err == nil {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
}
