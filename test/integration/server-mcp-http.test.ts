/**
 * MCP over streamable HTTP on `ironcage serve` (/mcp): the SDK's real client against a real server (real
 * sandboxes, SQLite store), authenticated with API keys; sandboxes an MCP session creates belong to its key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { type Json, request, serverStateDir, startServer, type TestServer } from './server-fixture.js';

const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
};
const MCP_ACCEPT = { accept: 'application/json, text/event-stream' };

async function connect(server: TestServer, headers: Record<string, string>) {
  const transport = new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
    requestInit: { headers },
  });
  const client = new Client({ name: 'ironcage-http-test', version: '0' });
  await client.connect(transport);
  return { client, transport };
}

async function call(client: Client, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  return (await client.callTool({ name, arguments: args })) as CallToolResult;
}

function ok(result: CallToolResult): Json {
  const text = result.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');
  assert.notEqual(result.isError, true, text);
  return result.structuredContent;
}

async function listedIds(server: TestServer, key: string): Promise<string[]> {
  const res = await request(server, 'GET', '/v1/sandboxes', { key });
  assert.equal(res.status, 200, res.text);
  return (res.json.items as Json[]).map((s) => s.id as string);
}

describe('MCP over streamable HTTP', () => {
  const state = serverStateDir('mcp-http');
  let server: TestServer;
  let tenantA: { key: string; id: string };
  let tenantB: { key: string; id: string };

  before(async () => {
    server = await startServer(state.dir);
    tenantA = await server.newKey(['sandbox']);
    tenantB = await server.newKey(['sandbox']);
  });
  after(async () => {
    await server?.close();
    state.cleanup();
  });

  test('a request without a valid key is refused with 401 before any session exists', async () => {
    const wrongKey = { authorization: 'Bearer ick_notarealkeynotarealkeynotarealkey0000000' };
    for (const headers of [{}, wrongKey] as Record<string, string>[]) {
      const res = await request(server, 'POST', '/mcp', {
        body: INITIALIZE,
        headers: { ...MCP_ACCEPT, ...headers },
      });
      assert.equal(res.status, 401, res.text);
      assert.equal(res.json.error.code, 'UNAUTHENTICATED');
    }
    const get = await request(server, 'GET', '/mcp', { headers: { 'mcp-session-id': 'x' } });
    assert.equal(get.status, 401);
  });

  test('tools, create, run, kill; the sandbox is owned by the calling key', async () => {
    const { client } = await connect(server, { authorization: `Bearer ${tenantA.key}` });
    try {
      const tools = (await client.listTools()).tools.map((t) => t.name);
      for (const name of ['sandbox_create', 'sandbox_run_command', 'sandbox_kill', 'sandbox_list']) {
        assert.ok(tools.includes(name), `missing ${name} in ${tools.join(', ')}`);
      }
      const created = ok(await call(client, 'sandbox_create', {}));
      const id = created.sandboxId as string;

      const ran = ok(
        await call(client, 'sandbox_run_command', { sandboxId: id, command: 'echo hi-$((6*7))' }),
      );
      assert.equal(ran.exitCode, 0);
      assert.equal(ran.stdout, 'hi-42\n');

      assert.ok((await listedIds(server, tenantA.key)).includes(id), 'owner lists it');
      assert.ok(!(await listedIds(server, tenantB.key)).includes(id), 'another tenant does not');
      const got = await request(server, 'GET', `/v1/sandboxes/${id}`, { key: tenantA.key });
      assert.equal(got.json.owner, tenantA.id);
      assert.equal(got.json.metadata.via, 'mcp');
      assert.equal((await request(server, 'GET', `/v1/sandboxes/${id}`, { key: tenantB.key })).status, 404);

      ok(await call(client, 'sandbox_kill', { sandboxId: id }));
      assert.equal(server.manager.get(id), undefined);
      assert.ok(!(await listedIds(server, tenantA.key)).includes(id));
    } finally {
      await client.close();
    }
  });

  test("a session answers only its own key (X-API-Key works too); another key's request is 404", async () => {
    const { client, transport } = await connect(server, { 'x-api-key': tenantA.key });
    try {
      const sessionId = transport.sessionId;
      assert.ok(sessionId);
      const foreign = await request(server, 'POST', '/mcp', {
        key: tenantB.key,
        body: { jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} },
        headers: { ...MCP_ACCEPT, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-03-26' },
      });
      assert.equal(foreign.status, 404, foreign.text);
      assert.equal(foreign.json.error.code, 'MCP_SESSION_NOT_FOUND');
      assert.ok((await client.listTools()).tools.length > 0, 'the owner still uses it');
    } finally {
      await client.close();
    }
  });

  test('closing a session (DELETE /mcp) kills its sandboxes and frees their ownership rows', async () => {
    const { client, transport } = await connect(server, { authorization: `Bearer ${tenantA.key}` });
    const id = ok(await call(client, 'sandbox_create', {})).sandboxId as string;
    assert.equal(server.manager.get(id)?.state, 'running');
    await transport.terminateSession();
    await client.close();
    const deadline = Date.now() + 10_000;
    while (server.manager.get(id) !== undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(server.manager.get(id), undefined, 'killed with its session');
    while ((await server.store.getSandbox(id)) !== null && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await server.store.getSandbox(id), null);
  });

  test('--mcp-allow opens network within its rules: a tenant may ask for a host inside them, not outside', async () => {
    const allowState = serverStateDir('mcp-http-allow');
    const open = await startServer(allowState.dir, { app: { mcp: { limits: { allow: ['example.com'] } } } });
    try {
      const tenant = await open.newKey(['sandbox']);
      const { client, transport } = await connect(open, { authorization: `Bearer ${tenant.key}` });
      try {
        const created = ok(await call(client, 'sandbox_create', { allowDomains: ['example.com'] }));
        const sandbox = open.manager.get(created.sandboxId as string);
        assert.ok(sandbox, 'a real sandbox');
        assert.equal(sandbox.policy.network.mode, 'proxy');
        const outside = await call(client, 'sandbox_create', { allowDomains: ['evil.example.net'] });
        assert.equal(outside.isError, true);
        assert.match(JSON.stringify(outside.content), /evil\.example\.net/);
      } finally {
        await transport.terminateSession().catch(() => {});
        await client.close();
      }
    } finally {
      await open.close();
      allowState.cleanup();
    }
  });

  test("the key's sandbox quota applies to MCP creates", async () => {
    const limited = await server.newKey(['sandbox'], { maxSandboxes: 1 });
    const { client } = await connect(server, { authorization: `Bearer ${limited.key}` });
    try {
      ok(await call(client, 'sandbox_create', {}));
      const second = await call(client, 'sandbox_create', {});
      assert.equal(second.isError, true);
      const text = second.content.map((c) => (c.type === 'text' ? c.text : '')).join('\n');
      assert.match(text, /QUOTA|quota|at most/i);
      assert.equal((await listedIds(server, limited.key)).length, 1);
    } finally {
      await client.close();
    }
  });
});
