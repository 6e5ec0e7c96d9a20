"""Seed 004 written with the clients people use: google-auth + boto3 (the reference for the
cold `idbridge token` figure of bench/run).

A service-account key signs a JWT for Google's OAuth2 token endpoint, which answers with a
Google-signed ID token for the target audience; boto3 hands it to AssumeRoleWithWebIdentity.
Endpoints come from the emulator's env file (IDBRIDGE_GOOGLE_OAUTH2_URL, AWS_ENDPOINT_URL_STS).
Prints the AccessKeyId on success, like `idbridge token --format env` does with more.

    python bench/python_flow.py examples/keys/seed004-sa-key.json
"""

import os
import sys

import boto3
import google.auth.transport.requests
from google.oauth2 import service_account

AUDIENCE = "https://myservice.aud.my-corp.net"
ROLE_ARN = "arn:aws:iam::111122223333:role/gcp-sa-key-caller"


def main(key_file: str) -> None:
    creds = service_account.IDTokenCredentials.from_service_account_file(
        key_file,
        target_audience=AUDIENCE,
        token_uri=os.environ["IDBRIDGE_GOOGLE_OAUTH2_URL"],
    )
    creds.refresh(google.auth.transport.requests.Request())
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_STS"],
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
    )
    out = sts.assume_role_with_web_identity(
        RoleArn=ROLE_ARN,
        RoleSessionName="sa-key-caller",
        WebIdentityToken=creds.token,
        DurationSeconds=3600,
    )
    print(out["Credentials"]["AccessKeyId"])


if __name__ == "__main__":
    main(sys.argv[1])
