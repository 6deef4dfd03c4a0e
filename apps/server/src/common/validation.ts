import { ValidationPipe, type ValidationError } from '@nestjs/common';
import { AppError } from './errors.js';

/**
 * The one global ValidationPipe: unknown fields are refused, known ones converted to their DTO types, and every
 * failure reported as `invalid_argument` with `<field>: <what>` (all failures, joined by `; `).
 */
export function createValidationPipe(): ValidationPipe {
  return new ValidationPipe({
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
