// @azure/identity (+ @azure/msal-node) actions, each run in its own process by
// tests/peers/test_node_azure.py.
//
// Usage: node azure.mjs ACTION JSON-ARGS
//
// The credentials read AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID,
// AZURE_FEDERATED_TOKEN_FILE, IDENTITY_ENDPOINT/IDENTITY_HEADER and
// AZURE_POD_IDENTITY_AUTHORITY_HOST from the environment the test built; Node trusts the
// emulator's CA through NODE_EXTRA_CA_CERTS. MSAL would ask the public cloud about an unknown
// authority host, so the Entra credentials run with `disableInstanceDiscovery: true`, as Azure
// documents for private authorities. Every action prints one JSON object on stdout; an expected
// failure is {"error": {"name", "message", "aadsts"}}.

import {
  ClientAssertionCredential,
  DefaultAzureCredential,
  ManagedIdentityCredential,
  WorkloadIdentityCredential,
} from '@azure/identity';

function errorOf(e) {
  const message = String(e?.message ?? e);
  const m = message.match(/AADSTS(\d+)/);
  return { error: { name: e?.name ?? typeof e, message, aadsts: m ? Number(m[1]) : null } };
}

async function tokenOf(cred, scope) {
  try {
    const t = await cred.getToken(scope);
    return { token: t.token, expires_on: Math.floor(t.expiresOnTimestamp / 1000) };
  } catch (e) {
    return errorOf(e);
  }
}

const OPTIONS = { disableInstanceDiscovery: true };

const ACTIONS = {
  client_assertion: (a) =>
    tokenOf(new ClientAssertionCredential(a.tenant_id, a.client_id, async () => a.assertion, OPTIONS), a.scope),
  workload_identity: (a) => tokenOf(new WorkloadIdentityCredential(OPTIONS), a.scope),
  managed_identity: (a) => {
    const opts = {};
    if (a.client_id) opts.clientId = a.client_id;
    if (a.object_id) opts.objectId = a.object_id;
    if (a.resource_id) opts.resourceId = a.resource_id;
    return tokenOf(new ManagedIdentityCredential(opts), a.scope);
  },
  default_credential: (a) => tokenOf(new DefaultAzureCredential(OPTIONS), a.scope),
};

async function main() {
  const [action, raw] = process.argv.slice(2);
  const fn = ACTIONS[action];
  if (!fn) {
    throw new Error(`unknown action ${action}; known: ${Object.keys(ACTIONS).join(', ')}`);
  }
  return fn(raw ? JSON.parse(raw) : {});
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
