// gcpclient drives Go's Google clients against a GCE metadata server (GCE_METADATA_HOST):
// cloud.google.com/go/compute/metadata, golang.org/x/oauth2/google and
// google.golang.org/api/idtoken, as Debian packages them. It prints one JSON object on stdout.
//
//	gcpclient detect                   OnGCE and the instance and project values
//	gcpclient token                    google.ComputeTokenSource and FindDefaultCredentials
//	gcpclient idtoken AUDIENCE         idtoken.NewTokenSource on GCE
//	gcpclient subscribe SUFFIX N       metadata.Subscribe until N callbacks (or a deadline)
//
// Errors are reported as {"error": "..."} with exit status 0, so the caller can assert on them;
// a usage error exits 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/idtoken"
)

func emit(v interface{}) {
	out, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	emit(map[string]string{"error": err.Error()})
	os.Exit(0)
}

func detect() {
	res := map[string]interface{}{"on_gce": metadata.OnGCE()}
	for name, get := range map[string]func() (string, error){
		"project_id":         metadata.ProjectID,
		"numeric_project_id": metadata.NumericProjectID,
		"instance_id":        metadata.InstanceID,
		"instance_name":      metadata.InstanceName,
		"zone":               metadata.Zone,
		"hostname":           metadata.Hostname,
		"email":              func() (string, error) { return metadata.Email("default") },
	} {
		v, err := get()
		if err != nil {
			fail(fmt.Errorf("%s: %w", name, err))
		}
		res[name] = v
	}
	attrs, err := metadata.InstanceAttributes()
	if err != nil {
		fail(fmt.Errorf("instance attributes: %w", err))
	}
	res["attributes"] = attrs
	scopes, err := metadata.Scopes("default")
	if err != nil {
		fail(fmt.Errorf("scopes: %w", err))
	}
	res["scopes"] = scopes
	emit(res)
}

func token() {
	ts := google.ComputeTokenSource("default")
	t, err := ts.Token()
	if err != nil {
		fail(fmt.Errorf("ComputeTokenSource: %w", err))
	}
	creds, err := google.FindDefaultCredentials(context.Background(), "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		fail(fmt.Errorf("FindDefaultCredentials: %w", err))
	}
	dt, err := creds.TokenSource.Token()
	if err != nil {
		fail(fmt.Errorf("default credentials token: %w", err))
	}
	emit(map[string]interface{}{
		"token":           t.AccessToken,
		"token_type":      t.TokenType,
		"expires_in":      int(time.Until(t.Expiry).Seconds()),
		"default_project": creds.ProjectID,
		"default_token":   dt.AccessToken,
	})
}

func idToken(audience string) {
	ts, err := idtoken.NewTokenSource(context.Background(), audience)
	if err != nil {
		fail(fmt.Errorf("idtoken.NewTokenSource: %w", err))
	}
	t, err := ts.Token()
	if err != nil {
		fail(fmt.Errorf("id token: %w", err))
	}
	emit(map[string]interface{}{"token": t.AccessToken, "expires_in": int(time.Until(t.Expiry).Seconds())})
}

// subscribe records each callback of metadata.Subscribe (value, time since start) until n
// callbacks or the deadline (SUBSCRIBE_SECONDS, default 20) has passed.
func subscribe(suffix string, n int) {
	type call struct {
		Value   string  `json:"value"`
		OK      bool    `json:"ok"`
		Seconds float64 `json:"seconds"`
	}
	limit := 20.0
	if s := os.Getenv("SUBSCRIBE_SECONDS"); s != "" {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			limit = v
		}
	}
	start := time.Now()
	var mu sync.Mutex
	var calls []call
	snapshot := func() []call {
		mu.Lock()
		defer mu.Unlock()
		return append([]call(nil), calls...)
	}
	done := make(chan error, 1)
	go func() {
		done <- metadata.Subscribe(suffix, func(v string, ok bool) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{Value: v, OK: ok, Seconds: time.Since(start).Seconds()})
			if len(calls) >= n {
				return fmt.Errorf("enough")
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		res := map[string]interface{}{"calls": snapshot(), "finished": true}
		if err != nil && err.Error() != "enough" {
			res["error"] = err.Error()
		}
		emit(res)
	case <-time.After(time.Duration(limit * float64(time.Second))):
		// Subscribe cannot be cancelled; report what happened so far.
		emit(map[string]interface{}{"calls": snapshot(), "finished": false})
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gcpclient detect|token|idtoken AUDIENCE|subscribe SUFFIX N")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "detect":
		detect()
	case "token":
		token()
	case "idtoken":
		if len(os.Args) != 3 {
			os.Exit(2)
		}
		idToken(os.Args[2])
	case "subscribe":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			os.Exit(2)
		}
		subscribe(os.Args[2], n)
	default:
		fmt.Fprintln(os.Stderr, "unknown action", os.Args[1])
		os.Exit(2)
	}
}
