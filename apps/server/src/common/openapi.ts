import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { type NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';

const UI_ASSETS = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
} as const;

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sigil admin API</title><link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/swagger-ui-init.js"></script></body>
</html>`;
const INIT = `window.ui = SwaggerUIBundle({ url: '/docs/json', dom_id: '#swagger-ui' });`;

/**
 * Serves the OpenAPI document at `/docs/json` and Swagger UI at `/docs`. The UI's two static files are read from
 * swagger-ui-dist (a dependency of @nestjs/swagger) by two plain routes, instead of pulling in @fastify/static.
 * These routes live outside Nest's router, so no guard applies: the document describes, it grants nothing.
 */
export function serveOpenApi(app: NestFastifyApplication): void {
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('Sigil admin API')
      .setDescription(
        'Admin API of sigil-server. Every /v1 route needs the local admin socket or `Authorization: Bearer <admin token>`.',
      )
      .setVersion('1')
      .addBearerAuth()
      .build(),
  );
  SwaggerModule.setup('docs', app, document, { ui: false, raw: ['json'], jsonDocumentUrl: 'docs/json' });

  const fastify = app.getHttpAdapter().getInstance();
  const assetsDir = (): string => {
    const requireFromSwagger = createRequire(createRequire(import.meta.url).resolve('@nestjs/swagger'));
    return (requireFromSwagger('swagger-ui-dist/absolute-path.js') as () => string)();
  };
  const cache = new Map<string, Buffer>();
  fastify.get('/docs', (_request, reply) => reply.type('text/html; charset=utf-8').send(PAGE));
  fastify.get('/docs/swagger-ui-init.js', (_request, reply) =>
    reply.type('application/javascript; charset=utf-8').send(INIT),
  );
  for (const [file, type] of Object.entries(UI_ASSETS)) {
    fastify.get(`/docs/${file}`, async (_request, reply) => {
      let content = cache.get(file);
      if (!content) {
        content = await readFile(join(assetsDir(), file));
        cache.set(file, content);
      }
      return reply.type(type).send(content);
    });
  }
}
