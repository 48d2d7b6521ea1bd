/**
 * E2B compatibility: the unmodified `e2b` SDK works against `ironcage serve` when pointed at it with
 * E2B_API_URL=<server>/e2b and E2B_SANDBOX_URL=<server>/e2b/envd (E2B_API_KEY: an ironcage API key). The SDK
 * sends every sandbox's daemon calls to that one sandbox URL and names the sandbox in a header, so one listening
 * port serves both planes.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../errors.js';
import { parseUntrustedJson } from '../untrusted-json.js';
import { E2bAccess, type E2bDeps } from './access.js';
import { e2bErrorBody, registerE2bApi } from './api.js';
import { registerEnvd } from './envd.js';
import { registerInterpreter } from './interpreter.js';

export type { E2bDeps } from './access.js';

export const E2B_PREFIX = '/e2b';
export const E2B_ENVD_PREFIX = '/e2b/envd';

/** Registers both planes under /e2b in their own encapsulated scopes (own body parsers and error shape). */
export async function registerE2bRoutes(app: FastifyInstance, deps: E2bDeps): Promise<void> {
  const access = new E2bAccess(deps);
  const onError = (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const { status, body } = e2bErrorBody(err);
    if (status >= 500 && status !== 502) request.log.error({ err }, 'e2b request failed');
    void reply.status(status).send(body);
  };

  await app.register(
    async (scope) => {
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
        const text = body as string;
        try {
          const parsed = text.trim() === '' ? undefined : parseUntrustedJson(text);
          done(null, parsed);
        } catch {
          done(new ApiError(400, 'INVALID_JSON', 'request body is not valid JSON'), undefined);
        }
      });
      scope.setErrorHandler(onError);
      registerE2bApi(scope, deps, access);
    },
    { prefix: E2B_PREFIX },
  );

  await app.register(
    async (scope) => {
      // Uploads and Connect messages are read by the handlers themselves (size-capped).
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
      scope.setErrorHandler(onError);
      registerEnvd(scope, access, deps.ctx.metrics);
      // @e2b/code-interpreter sends its port-49999 calls (/execute, /contexts) to the same sandbox URL.
      registerInterpreter(scope, access);
    },
    { prefix: E2B_ENVD_PREFIX },
  );
}
