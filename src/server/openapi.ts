/** The OpenAPI 3 document, generated from the route table and its zod schemas (the ones requests are checked with). */
import { z } from 'zod';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { VERSION } from '../version.js';
import type { RouteDef } from './routes/route.js';
import { errorSchema } from './schemas.js';

type JsonSchema = Record<string, unknown>;

function toJsonSchema(schema: z.ZodTypeAny): JsonSchema {
  const { $schema: _ignored, ...rest } = zodToJsonSchema(schema, {
    target: 'openApi3',
    $refStrategy: 'none',
    effectStrategy: 'input',
  }) as JsonSchema;
  return rest;
}

/** The object behind refinements, optionals and defaults, if there is one. */
function objectShape(schema: z.ZodTypeAny | undefined): Record<string, z.ZodTypeAny> | null {
  let s: z.ZodTypeAny | undefined = schema;
  for (let depth = 0; s !== undefined && depth < 10; depth++) {
    if (s instanceof z.ZodObject) return s.shape as Record<string, z.ZodTypeAny>;
    if (s instanceof z.ZodEffects) s = s.innerType();
    else if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
    else if (s instanceof z.ZodDefault) s = s.removeDefault();
    else return null;
  }
  return null;
}

function hasCatchall(schema: z.ZodTypeAny | undefined): boolean {
  let s = schema;
  while (s instanceof z.ZodEffects) s = s.innerType();
  return s instanceof z.ZodObject && !(s._def.catchall instanceof z.ZodNever);
}

function parameters(def: RouteDef): JsonSchema[] {
  const out: JsonSchema[] = [];
  for (const [where, schema] of [
    ['path', def.params],
    ['query', def.query],
  ] as const) {
    const shape = objectShape(schema);
    if (shape === null) continue;
    for (const [name, field] of Object.entries(shape)) {
      out.push({
        name,
        in: where,
        required: where === 'path' || !field.isOptional(),
        schema: toJsonSchema(field),
        ...(field.description === undefined ? {} : { description: field.description }),
      });
    }
    if (where === 'query' && hasCatchall(schema)) {
      out.push({
        name: 'metadata.<key>',
        in: 'query',
        required: false,
        description: 'Filter: only sandboxes whose metadata has <key> equal to this value (repeat for AND)',
        schema: { type: 'string' },
      });
    }
  }
  return out;
}

function requestBody(def: RouteDef): JsonSchema | undefined {
  if (def.bodyKind === 'raw') {
    return {
      required: false,
      content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
    };
  }
  if (def.body === undefined) return undefined;
  const schema = toJsonSchema(def.body);
  return {
    required: !def.body.isOptional(),
    content: {
      'application/json': { schema },
      ...(def.mergePatch ? { 'application/merge-patch+json': { schema } } : {}),
    },
  };
}

function responses(def: RouteDef): JsonSchema {
  const out: JsonSchema = {};
  for (const [status, doc] of Object.entries(def.responses)) {
    const content: JsonSchema = {};
    const type = doc.contentType ?? 'application/json';
    content[type] = doc.schema
      ? { schema: toJsonSchema(doc.schema) }
      : { schema: { type: 'string', format: 'binary' } };
    if (doc.alt) content[doc.alt.contentType] = { schema: toJsonSchema(doc.alt.schema) };
    out[status] = { description: doc.description, content };
  }
  const error = { content: { 'application/json': { schema: toJsonSchema(errorSchema) } } };
  if (def.auth !== 'public') {
    out['401'] ??= { description: 'No, unknown or revoked API key', ...error };
    out['403'] ??= { description: 'The key lacks the scope', ...error };
    out['429'] ??= { description: 'Rate limit (see Retry-After)', ...error };
  }
  out['400'] ??= { description: 'Invalid input', ...error };
  return out;
}

export function buildOpenApiDocument(routes: readonly RouteDef[]): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const def of routes) {
    const path = def.url.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}');
    paths[path] ??= {};
    const body = requestBody(def);
    (paths[path] as Record<string, JsonSchema>)[def.method.toLowerCase()] = {
      summary: def.summary,
      tags: [def.tag],
      operationId: `${def.method.toLowerCase()}${path.replace(/[{}]/g, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      parameters: parameters(def),
      ...(body === undefined ? {} : { requestBody: body }),
      responses: responses(def),
      security: def.auth === 'public' ? [] : [{ bearer: [] }, { apiKey: [] }],
      ...(def.auth === 'public' ? {} : { 'x-ironcage-action': def.auth }),
    };
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'ironcage',
      version: VERSION,
      description:
        'Self-hosted sandboxes for AI agents. Errors are always { error: { code, message } }; every response ' +
        'echoes x-request-id (sent by the client, or generated).',
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
      },
    },
    paths,
  };
}
