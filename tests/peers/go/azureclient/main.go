// azureclient drives go-autorest's adal (as Debian packages it) through its managed identity
// (MSI) token source on the Azure IMDS protocol, with the IMDS address taken from
// AZURE_POD_IDENTITY_AUTHORITY_HOST (adal's custom MSI endpoint parameter; adal itself has no
// environment override). It prints one JSON object on stdout.
//
//	azureclient imds RESOURCE [CLIENT_ID]   a token for RESOURCE (system-assigned, or the
//	                                        user-assigned identity CLIENT_ID)
//
// Errors are reported as {"error": "..."} with exit status 0; a usage error exits 2.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/Azure/go-autorest/autorest/adal"
)

func emit(v interface{}) {
	out, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func fail(what string, err error) {
	emit(map[string]string{"error": fmt.Sprintf("%s: %v", what, err)})
	os.Exit(0)
}

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 || os.Args[1] != "imds" {
		fmt.Fprintln(os.Stderr, "usage: azureclient imds RESOURCE [CLIENT_ID]")
		os.Exit(2)
	}
	host := strings.TrimRight(os.Getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST"), "/")
	if host == "" {
		fail("environment", fmt.Errorf("AZURE_POD_IDENTITY_AUTHORITY_HOST is not set"))
	}
	endpoint := host + "/metadata/identity/oauth2/token"
	resource := os.Args[2]
	var spt *adal.ServicePrincipalToken
	var err error
	if len(os.Args) == 4 {
		spt, err = adal.NewServicePrincipalTokenFromMSIWithUserAssignedID(endpoint, resource, os.Args[3])
	} else {
		spt, err = adal.NewServicePrincipalTokenFromMSI(endpoint, resource)
	}
	if err != nil {
		fail("token source", err)
	}
	spt.MaxMSIRefreshAttempts = 1
	if err := spt.Refresh(); err != nil {
		fail("refresh", err)
	}
	t := spt.Token()
	emit(map[string]interface{}{
		"token":      t.AccessToken,
		"expires_on": t.ExpiresOn.String(),
		"expires_in": t.ExpiresIn.String(),
		"resource":   t.Resource,
		"type":       t.Type,
		"expired":    t.IsExpired(),
	})
}
