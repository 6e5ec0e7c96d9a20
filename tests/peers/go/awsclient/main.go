// awsclient drives the AWS SDKs for Go (v2 and v1, as Debian packages them) through their
// default credential chains and IMDS clients, then proves the credentials with a signed
// GetCallerIdentity at AWS_ENDPOINT_URL_STS (these SDK versions predate that variable, so it
// is passed to them as a custom endpoint). It prints one JSON object on stdout.
//
//	awsclient v2-imds      region from IMDS (config.WithEC2IMDSRegion), the identity document,
//	                       iam/info, and the default chain's credentials
//	awsclient v2-chain     the default chain (env, web identity, credential_process, ECS, IMDS)
//	awsclient v1-imds      ec2metadata Region and identity document, and the default chain
//	awsclient v1-chain     the default chain with the shared config enabled
//
// Errors are reported as {"error": "..."} with exit status 0; a usage error exits 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	awsv2 "github.com/aws/aws-sdk-go-v2/aws"
	configv2 "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	stsv2 "github.com/aws/aws-sdk-go-v2/service/sts"

	awsv1 "github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/ec2metadata"
	"github.com/aws/aws-sdk-go/aws/session"
	stsv1 "github.com/aws/aws-sdk-go/service/sts"
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

func stsEndpoint() string {
	e := os.Getenv("AWS_ENDPOINT_URL_STS")
	if e == "" {
		fail("environment", fmt.Errorf("AWS_ENDPOINT_URL_STS is not set"))
	}
	return e
}

func v2Config(ctx context.Context, opts ...func(*configv2.LoadOptions) error) awsv2.Config {
	endpoint := stsEndpoint()
	resolver := awsv2.EndpointResolverWithOptionsFunc(
		func(service, region string, _ ...interface{}) (awsv2.Endpoint, error) {
			if service == stsv2.ServiceID {
				return awsv2.Endpoint{URL: endpoint, SigningRegion: region, HostnameImmutable: true}, nil
			}
			return awsv2.Endpoint{}, &awsv2.EndpointNotFoundError{}
		})
	opts = append(opts, configv2.WithEndpointResolverWithOptions(resolver))
	cfg, err := configv2.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		fail("config.LoadDefaultConfig", err)
	}
	return cfg
}

func v2Identity(ctx context.Context, cfg awsv2.Config, res map[string]interface{}) {
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		fail("credentials", err)
	}
	res["region"] = cfg.Region
	res["source"] = creds.Source
	res["access_key_id"] = creds.AccessKeyID
	res["expires_in"] = int(time.Until(creds.Expires).Seconds())
	out, err := stsv2.NewFromConfig(cfg).GetCallerIdentity(ctx, &stsv2.GetCallerIdentityInput{})
	if err != nil {
		fail("GetCallerIdentity", err)
	}
	res["arn"] = awsv2.ToString(out.Arn)
	res["account"] = awsv2.ToString(out.Account)
}

func v2Imds(ctx context.Context) {
	cfg := v2Config(ctx, configv2.WithEC2IMDSRegion())
	res := map[string]interface{}{}
	client := imds.NewFromConfig(cfg)
	doc, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		fail("GetInstanceIdentityDocument", err)
	}
	res["document"] = doc.InstanceIdentityDocument
	info, err := client.GetIAMInfo(ctx, &imds.GetIAMInfoInput{})
	if err != nil {
		fail("GetIAMInfo", err)
	}
	res["instance_profile_arn"] = info.InstanceProfileArn
	v2Identity(ctx, cfg, res)
	emit(res)
}

func v2Chain(ctx context.Context) {
	res := map[string]interface{}{}
	v2Identity(ctx, v2Config(ctx), res)
	emit(res)
}

func v1Session(shared bool) *session.Session {
	opts := session.Options{Config: awsv1.Config{Endpoint: awsv1.String(stsEndpoint())}}
	if shared {
		opts.SharedConfigState = session.SharedConfigEnable
	}
	sess, err := session.NewSessionWithOptions(opts)
	if err != nil {
		fail("session.NewSessionWithOptions", err)
	}
	return sess
}

func v1Identity(sess *session.Session, res map[string]interface{}) {
	creds, err := sess.Config.Credentials.Get()
	if err != nil {
		fail("credentials", err)
	}
	res["source"] = creds.ProviderName
	res["access_key_id"] = creds.AccessKeyID
	out, err := stsv1.New(sess).GetCallerIdentity(&stsv1.GetCallerIdentityInput{})
	if err != nil {
		fail("GetCallerIdentity", err)
	}
	res["arn"] = awsv1.StringValue(out.Arn)
	res["account"] = awsv1.StringValue(out.Account)
}

func v1Imds() {
	// The metadata client must not inherit the STS endpoint.
	base := session.Must(session.NewSession())
	md := ec2metadata.New(base)
	region, err := md.Region()
	if err != nil {
		fail("ec2metadata Region", err)
	}
	doc, err := md.GetInstanceIdentityDocument()
	if err != nil {
		fail("ec2metadata GetInstanceIdentityDocument", err)
	}
	sess := v1Session(false)
	sess.Config.Region = awsv1.String(region)
	res := map[string]interface{}{"region": region, "document": doc}
	v1Identity(sess, res)
	emit(res)
}

func v1Chain() {
	sess := v1Session(true)
	res := map[string]interface{}{"region": awsv1.StringValue(sess.Config.Region)}
	v1Identity(sess, res)
	emit(res)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: awsclient v2-imds|v2-chain|v1-imds|v1-chain")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	switch os.Args[1] {
	case "v2-imds":
		v2Imds(ctx)
	case "v2-chain":
		v2Chain(ctx)
	case "v1-imds":
		v1Imds()
	case "v1-chain":
		v1Chain()
	default:
		fmt.Fprintln(os.Stderr, "unknown action", os.Args[1])
		os.Exit(2)
	}
}
