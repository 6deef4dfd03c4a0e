import { ValidationPipe, type ArgumentMetadata, type ValidationError } from '@nestjs/common';
import { acceptCheckOf } from './accept-check.js';
import { AppError } from './errors.js';

/**
 * Nest's ValidationPipe with a fast path: a body that the DTO's own decorators surely accept as it is (see
 * acceptCheckOf) is handed on as the plain object it is; any other body, or any DTO the check does not mirror, goes
 * through the pipe in full, so failures keep their messages.
 */
class BodyValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    if (metadata.type === 'body' && metadata.metatype !== undefined && acceptCheckOf(metadata.metatype)?.(value)) {
      return value;
    }
    return super.transform(value, metadata);
  }
}

/**
 * The one global ValidationPipe: unknown fields are refused, known ones converted to their DTO types, and every
 * failure reported as `invalid_argument` with `<field>: <what>` (all failures, joined by `; `).
 */
export function createValidationPipe(): ValidationPipe {
  return new BodyValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    validationError: { target: false, value: false },
    exceptionFactory: (errors) => new AppError('invalid_argument', formatValidationErrors(errors).join('; ')),
  });
}

/** Flattens class-validator errors into `path: problem` lines, e.g. `selectors.0.type: must be a string`. */
export function formatValidationErrors(errors: readonly ValidationError[], parent = ''): string[] {
  return errors.flatMap((error) => {
    const path = parent ? `${parent}.${error.property}` : error.property;
    const own = Object.entries(error.constraints ?? {}).map(([name, message]) =>
      name === 'whitelistValidation' ? `${path}: unknown field` : `${path}: ${stripProperty(message, error.property)}`,
    );
    return [...own, ...formatValidationErrors(error.children ?? [], path)];
  });
}

// class-validator's default messages start with the property name ("ttl must not be less than 1").
function stripProperty(message: string, property: string): string {
  const prefix = `${property} `;
  const withoutEach = message.startsWith('each value in ') ? message.slice('each value in '.length) : message;
  const text = withoutEach.startsWith(prefix) ? withoutEach.slice(prefix.length) : withoutEach;
  return withoutEach === message ? text : `each value ${text}`;
}
