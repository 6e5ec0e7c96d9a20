// Real Node.js client actions, each run in its own process by tests/peers/test_node_*.py.
//
// Usage: node clients.mjs ACTION JSON-ARGS
//
// Every action prints one JSON object on stdout. The libraries read their endpoint overrides from
// the environment the test built (GCE_METADATA_HOST/IP, AWS_EC2_METADATA_SERVICE_ENDPOINT,
// AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_ENDPOINT_URL_STS, …). Expected failures are reported
// as {"error": {"name", "code", "message"}} so the test can assert on them; anything else that
// goes wrong is {"error": {..., "unexpected": true}}.

import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import {
  fromContainerMetadata,
  fromInstanceMetadata,
  fromNodeProviderChain,
  fromProcess,
  fromTokenFile,
} from '@aws-sdk/credential-providers';
import { SignatureV4 } from '@smithy/signature-v4';
import { CoreV1Api, KubeConfig, Watch } from '@kubernetes/client-node';
import * as gcpMetadata from 'gcp-metadata';
import { ExternalAccountClient, GoogleAuth, Impersonated, OAuth2Client } from 'google-auth-library';

const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';

function claimsOf(jwt) {
  const payload = jwt.split('.')[1];
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}

function errorOf(e) {
  return {
    error: {
      name: e?.name ?? typeof e,
      code: e?.code ?? e?.Code ?? e?.response?.status ?? null,
      status: e?.response?.status ?? e?.$metadata?.httpStatusCode ?? null,
      message: String(e?.message ?? e),
      body: e?.response?.data ?? null,
    },
  };
}

/** Runs `fn`, turning a thrown error into {"error": …} (an expected outcome for some tests). */
async function attempt(fn) {
  try {
    return await fn();
  } catch (e) {
    return errorOf(e);
  }
}

// ------------------------------------------------------------------------------ Google ---

/** gcp-metadata detection, then GoogleAuth's own choice of client and its project. */
async function gce_detect() {
  const available = await gcpMetadata.isAvailable();
  const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM] });
  const client = await auth.getClient();
  const email = await gcpMetadata.instance('service-accounts/default/email');
  return {
    available,
    client: client.constructor.name,
    project: await auth.getProjectId(),
    email,
  };
}

/** Access token (GoogleAuth → Compute), ID token (getIdTokenClient), getTokenInfo. */
async function gce_tokens(args) {
  const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM] });
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  const idClient = await auth.getIdTokenClient(args.audience);
  const idToken = await idClient.idTokenProvider.fetchIdToken(args.audience);
  const out = {
    client: client.constructor.name,
    access_token: token,
    id_token: idToken,
    id_token_claims: claimsOf(idToken),
  };
  if (args.tokeninfo_url) {
    out.tokeninfo = await tokenInfo(args.tokeninfo_url, token);
  }
  return out;
}

/** OAuth2Client.getTokenInfo: POST with an empty body and the token as `Authorization: Bearer`. */
async function tokenInfo(url, accessToken) {
  const client = new OAuth2Client({ endpoints: { tokenInfoUrl: url } });
  const info = await client.getTokenInfo(accessToken);
  return { email: info.email ?? null, sub: info.sub ?? null, scopes: info.scopes, expiry_date: info.expiry_date };
}

async function token_info(args) {
  return attempt(() => tokenInfo(args.tokeninfo_url, args.access_token));
}

/** Impersonated (source: the metadata server's account) → access token and ID token. */
async function impersonated(args) {
  const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM] });
  const sourceClient = await auth.getClient();
  const target = new Impersonated({
    sourceClient,
    targetPrincipal: args.target,
    targetScopes: [CLOUD_PLATFORM],
    delegates: args.delegates ?? [],
    lifetime: 600,
    endpoint: args.endpoint,
  });
  return attempt(async () => {
    const { token } = await target.getAccessToken();
    const out = { access_token: token };
    const idOptions = args.include_email === undefined ? undefined : { includeEmail: args.include_email };
    const idToken = await target.fetchIdToken(args.audience, idOptions);
    out.id_token = idToken;
    out.id_token_claims = claimsOf(idToken);
    if (args.tokeninfo_url) {
      out.tokeninfo = await tokenInfo(args.tokeninfo_url, token);
    }
    return out;
  });
}

/** ExternalAccountClient.fromJSON(info).getAccessToken() (aws, file, url or executable source). */
async function external_account(args) {
  return attempt(async () => {
    const client = ExternalAccountClient.fromJSON({ ...args.info, scopes: [CLOUD_PLATFORM] });
    if (!client) {
      throw new Error('ExternalAccountClient.fromJSON returned nothing');
    }
    const { token } = await client.getAccessToken();
    const out = { client: client.constructor.name, access_token: token };
    if (args.tokeninfo_url) {
      out.tokeninfo = await tokenInfo(args.tokeninfo_url, token);
    }
    return out;
  });
}

// --------------------------------------------------------------------------------- AWS ---

const PROVIDERS = {
  chain: () => fromNodeProviderChain(),
  imds: () => fromInstanceMetadata({ timeout: 5000, maxRetries: 0 }),
  ecs: () => fromContainerMetadata({ timeout: 5000, maxRetries: 0 }),
  process: (args) => fromProcess({ profile: args.profile }),
  web_identity: () => fromTokenFile(),
};

/** A credential provider, then STS GetCallerIdentity with those credentials. */
async function aws_caller_identity(args) {
  return attempt(async () => {
    const provider = PROVIDERS[args.provider](args);
    const creds = await provider();
    const sts = new STSClient({ region: args.region ?? 'us-east-1', credentials: creds, maxAttempts: 1 });
    const ident = await sts.send(new GetCallerIdentityCommand({}));
    return {
      access_key_id: creds.accessKeyId,
      expiration: creds.expiration ? creds.expiration.toISOString() : null,
      Arn: ident.Arn,
      Account: ident.Account,
      UserId: ident.UserId,
    };
  });
}

/** The SDK's Hash interface over node:crypto (SHA-256, or HMAC-SHA256 with a secret). */
class Sha256 {
  constructor(secret) {
    this.h = secret ? createHmac('sha256', secret) : createHash('sha256');
  }
  update(data) {
    this.h.update(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
}

/** The SDK's SigV4 presigner on a GET GetCallerIdentity at the STS endpoint, then a plain GET. */
async function presigned_caller_identity(args) {
  return attempt(async () => {
    const creds = await fromInstanceMetadata({ timeout: 5000, maxRetries: 0 })();
    const url = new URL(args.sts);
    const signer = new SignatureV4({ credentials: creds, region: 'us-east-1', service: 'sts', sha256: Sha256 });
    const presigned = await signer.presign(
      {
        method: 'GET',
        protocol: url.protocol,
        hostname: url.hostname,
        port: url.port ? Number(url.port) : undefined,
        path: '/',
        query: { Action: 'GetCallerIdentity', Version: '2011-06-15' },
        headers: { host: url.host },
      },
      { expiresIn: args.expires_in ?? 900 },
    );
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(presigned.query)) {
      query.append(k, v);
    }
    if (args.sleep_ms) {
      await new Promise((r) => setTimeout(r, args.sleep_ms));
    }
    const res = await fetch(`${url.origin}/?${query}`);
    return { has_token: query.has('X-Amz-Security-Token'), status: res.status, body: await res.text() };
  });
}

// -------------------------------------------------------------------------- Kubernetes ---

/** A KubeConfig for the emulated API server and a bearer token (no kubeconfig file). The
 * client refuses an http:// server unless skipTLSVerify is set, and the emulator is plain HTTP. */
function kubeConfig(args) {
  const kc = new KubeConfig();
  kc.loadFromClusterAndUser({ name: 'emulated', server: args.url, skipTLSVerify: true }, { name: 'agent', token: args.token });
  return kc;
}

/** A pod by IP (field selector), a watch from the list's resourceVersion, a pod-bound
 * TokenRequest, and the API server's 422 for a too-short token, with @kubernetes/client-node. */
async function kubernetes(args) {
  return attempt(async () => {
    const kc = kubeConfig(args);
    const core = kc.makeApiClient(CoreV1Api);
    const list = await core.listPodForAllNamespaces({ fieldSelector: `status.podIP=${args.pod_ip}` });
    const pod = list.items[0];
    const out = {
      pods: list.items.map((p) => ({ name: p.metadata.name, namespace: p.metadata.namespace, service_account: p.spec.serviceAccountName })),
    };
    // A pod added after the list: the watch from the list's version replays it.
    const put = await fetch(`${args.url}/_emulator/kubernetes/namespaces/default/pods/${args.new_pod}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ pod_ip: args.new_pod_ip, node: 'node-9' }),
    });
    out.put_status = put.status;
    out.events = await new Promise((resolve, reject) => {
      const events = [];
      let controller;
      new Watch(kc)
        .watch(
          '/api/v1/pods',
          { fieldSelector: 'spec.nodeName=node-9', resourceVersion: list.metadata.resourceVersion, timeoutSeconds: 20 },
          (type, obj) => {
            events.push({ type, name: obj.metadata.name });
            controller?.abort();
            resolve(events);
          },
          (err) => (err && err.name !== 'AbortError' ? reject(err) : resolve(events)),
        )
        .then((c) => {
          controller = c;
          if (events.length) c.abort();
        }, reject);
    });
    const token = await core.createNamespacedServiceAccountToken({
      name: pod.spec.serviceAccountName,
      namespace: pod.metadata.namespace,
      body: {
        spec: {
          audiences: args.audiences,
          boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod.metadata.name, uid: pod.metadata.uid },
        },
      },
    });
    out.token = token.status.token;
    out.expiration = token.status.expirationTimestamp.toISOString();
    out.pod_uid = pod.metadata.uid;
    try {
      await core.createNamespacedServiceAccountToken({
        name: pod.spec.serviceAccountName,
        namespace: pod.metadata.namespace,
        body: { spec: { audiences: args.audiences, expirationSeconds: 60 } },
      });
      out.short = { status: 201 };
    } catch (e) {
      out.short = { status: e.code, body: typeof e.body === 'string' ? JSON.parse(e.body) : e.body };
    }
    return out;
  });
}

// ------------------------------------------------------------------------------- main ---

const ACTIONS = {
  gce_detect,
  gce_tokens,
  token_info,
  impersonated,
  external_account,
  aws_caller_identity,
  presigned_caller_identity,
  kubernetes,
};

async function main() {
  const [action, raw] = process.argv.slice(2);
  const fn = ACTIONS[action];
  if (!fn) {
    throw new Error(`unknown action ${action}; known: ${Object.keys(ACTIONS).join(', ')}`);
  }
  const args = raw ? JSON.parse(raw.startsWith('@') ? readFileSync(raw.slice(1), 'utf8') : raw) : {};
  return fn(args);
}

main().then(
  (out) => {
    process.stdout.write(`${JSON.stringify(out)}\n`);
  },
  (e) => {
    const out = errorOf(e);
    out.error.unexpected = true;
    out.error.stack = String(e?.stack ?? '');
    process.stdout.write(`${JSON.stringify(out)}\n`);
  },
);
