import { createRequire } from 'node:module';
import type { MetadataStorage as TransformerMetadataStorage } from 'class-transformer/types/MetadataStorage.js';
import { getMetadataStorage, type ValidationArguments } from 'class-validator';

type ValidationMetadata = ReturnType<ReturnType<typeof getMetadataStorage>['getTargetValidationMetadatas']>[number];

// class-transformer's own store of `@Type` and `@Transform` (the one its `plainToInstance` reads): not in its typings'
// entry point, so required from where its CommonJS build (the one Nest and our DTOs load) keeps it.
const { defaultMetadataStorage } = createRequire(import.meta.url)('class-transformer/cjs/storage.js') as {
  defaultMetadataStorage: TransformerMetadataStorage;
};

/**
 * Answers true only for a value that the global ValidationPipe would accept as it is: a plain JSON object with no
 * unknown field whose every field passes the DTO class's own class-validator decorators, run through class-validator's
 * own constraint functions (the rules stay on the DTO, in one place). Anything else, or any doubt, answers false and
 * the value goes through the pipe as before, which reports the failures with its usual messages. It is the pipe's
 * fast path for large valid bodies (a 500-entry batch create): class-validator's walk (its metadata look-ups and
 * error objects per value) and class-transformer's instance building cost more than the checks themselves.
 */
export type AcceptCheck = (value: unknown) => boolean;

/** A DTO class (what Nest hands the pipe as the metatype). */
export type DtoClass = new (...args: never[]) => unknown;

interface Constraint {
  readonly name: string;
  readonly validate: (value: unknown, args: ValidationArguments) => unknown;
  readonly each: boolean;
  readonly constraints: unknown[];
}

interface PropertyCheck {
  readonly name: string;
  /** `@IsOptional` and `@ValidateIf`: when one answers false the property's other checks are skipped. */
  readonly conditions: readonly ((object: object, value: unknown) => boolean)[];
  readonly constraints: readonly Constraint[];
  readonly nested: AcceptCheck | undefined;
}

const compiled = new Map<DtoClass, AcceptCheck | null>();

/**
 * The accept check of a DTO class, or undefined when the class uses anything it does not mirror exactly (then the
 * pipe runs in full): only class-validator's conditional (`@IsOptional`), synchronous custom (every built-in check
 * such as `@IsString`, `@ArrayMaxSize`) and nested (`@ValidateNested` with class-transformer's `@Type`) metadata,
 * no other class-transformer metadata (a `@Transform` or a `@Type` that converts a value would change what the
 * pipe hands on), and no field initialisers (the pipe's instance would carry defaults that a plain object lacks).
 */
export function acceptCheckOf(target: DtoClass): AcceptCheck | undefined {
  if (compiled.has(target)) return compiled.get(target) ?? undefined;
  compiled.set(target, null); // a class nested in itself is not mirrored
  const check = compile(target);
  compiled.set(target, check ?? null);
  return check;
}

function compile(target: DtoClass): AcceptCheck | undefined {
  const storage = getMetadataStorage();
  // As class-validator's executor asks without groups (the pipe's options set none).
  const metadatas = storage.getTargetValidationMetadatas(target, '', false, false, undefined);
  if (metadatas.length === 0 || hasPrototypeMembers(target) || hasClassTransformerRules(target)) return undefined;
  const grouped = storage.groupByPropertyName(metadatas) as Record<string, ValidationMetadata[]>;
  const properties: PropertyCheck[] = [];
  for (const [name, list] of Object.entries(grouped)) {
    if (hasTransformerMetadata(target, name, list)) return undefined;
    const property = compileProperty(target, name, list);
    if (property === undefined) return undefined;
    properties.push(property);
  }
  const known = new Set(properties.map((property) => property.name));
  if (!hasOnlyValidatedFields(target, known)) return undefined;
  const targetName = target.name;
  const check: AcceptCheck = (value) => {
    if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return false;
    const object = value as Record<string, unknown>;
    for (const key of Object.keys(object)) if (!known.has(key)) return false; // whitelist: the pipe refuses it
    for (const property of properties) {
      // A field the body lacks that still reads as something comes from a polluted Object.prototype: the pipe's
      // instance would hide it behind its own undefined field, a plain object does not.
      if (!Object.hasOwn(object, property.name) && property.name in object) return false;
      const field = object[property.name];
      if (!property.conditions.every((condition) => condition(object, field))) continue;
      for (const constraint of property.constraints) {
        const args: ValidationArguments = {
          targetName,
          property: property.name,
          object,
          value: field,
          constraints: constraint.constraints,
        };
        if (constraint.each) {
          if (!Array.isArray(field)) return false;
          for (const element of field as unknown[]) if (constraint.validate(element, args) !== true) return false;
        } else if (constraint.validate(field, args) !== true) {
          return false;
        }
      }
      if (property.nested !== undefined) {
        const nested = property.nested;
        if (Array.isArray(field)) {
          for (const element of field as unknown[]) if (!nested(element)) return false;
        } else if (!nested(field)) {
          return false;
        }
      }
    }
    return true;
  };
  // A condition or custom check that throws on a plain object (it expected the DTO's instance) is a doubt: full pipe.
  return (value) => {
    try {
      return check(value);
    } catch {
      return false;
    }
  };
}

function compileProperty(
  target: DtoClass,
  name: string,
  list: readonly ValidationMetadata[],
): PropertyCheck | undefined {
  const storage = getMetadataStorage();
  const conditions: ((object: object, value: unknown) => boolean)[] = [];
  const constraints: Constraint[] = [];
  let nested: AcceptCheck | undefined;
  for (const metadata of list) {
    if (metadata.type === 'conditionalValidation') {
      conditions.push(metadata.constraints[0] as (object: object, value: unknown) => boolean);
    } else if (metadata.type === 'customValidation' && metadata.constraintCls !== undefined) {
      const found = storage.getTargetValidatorConstraints(metadata.constraintCls);
      if (found.length === 0 || found.some((constraint) => constraint.async)) return undefined;
      for (const constraint of found) {
        const instance = constraint.instance as { validate?: Constraint['validate'] };
        if (typeof instance.validate !== 'function') return undefined;
        constraints.push({
          name: metadata.name ?? constraint.name,
          validate: instance.validate.bind(instance),
          each: metadata.each === true,
          constraints: metadata.constraints ?? [],
        });
      }
    } else if (metadata.type === 'nestedValidation') {
      const type = defaultMetadataStorage.findTypeMetadata(target, name);
      const nestedClass = type?.typeFunction() as DtoClass | undefined;
      if (type === undefined || typeof nestedClass !== 'function' || type.options?.discriminator !== undefined) {
        return undefined;
      }
      nested = acceptCheckOf(nestedClass);
      if (nested === undefined) return undefined;
    } else {
      return undefined;
    }
  }
  return { name, conditions, constraints, nested };
}

/** A `@Type` is mirrored only on a nested property (it names the nested class); any other transformer metadata is not. */
function hasTransformerMetadata(target: DtoClass, name: string, list: readonly ValidationMetadata[]): boolean {
  const isNested = list.some((metadata) => metadata.type === 'nestedValidation');
  return (
    (!isNested && defaultMetadataStorage.findTypeMetadata(target, name) !== undefined) ||
    // Every direction (class-transformer's TransformationType: 0 plain to class, 1 class to plain, 2 class to class):
    // a `@Transform` of any kind is not mirrored.
    [0, 1, 2].some((type) => defaultMetadataStorage.findTransformMetadatas(target, name, type).length > 0) ||
    defaultMetadataStorage.findExposeMetadata(target, name) !== undefined ||
    defaultMetadataStorage.findExcludeMetadata(target, name) !== undefined
  );
}

/**
 * The pipe's instance holds every declared field as its own property (ES2022 class fields): a field with a default or
 * without a validator (which the whitelist refuses on every request) would make the instance differ from the body.
 */
function hasOnlyValidatedFields(target: DtoClass, known: ReadonlySet<string>): boolean {
  try {
    const instance = new (target as new () => object)();
    return Object.entries(instance).every(([key, value]) => value === undefined && known.has(key));
  } catch {
    return false;
  }
}

/** Methods or accessors anywhere in the class chain: code (a condition, a controller) may expect the instance. */
function hasPrototypeMembers(target: DtoClass): boolean {
  for (let proto: object | null = target.prototype as object; proto !== null && proto !== Object.prototype;) {
    if (Reflect.ownKeys(proto).some((key) => key !== 'constructor')) return true;
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return false;
}

/** Class-level `@Expose`/`@Exclude` (or any on a property) change what class-transformer keeps: not mirrored. */
function hasClassTransformerRules(target: DtoClass): boolean {
  // The property lists leave out class-level decorators, which are found under an undefined property name.
  const classLevel = undefined as unknown as string;
  return (
    defaultMetadataStorage.getExposedMetadatas(target).length > 0 ||
    defaultMetadataStorage.getExcludedMetadatas(target).length > 0 ||
    defaultMetadataStorage.findExposeMetadata(target, classLevel) !== undefined ||
    defaultMetadataStorage.findExcludeMetadata(target, classLevel) !== undefined
  );
}
