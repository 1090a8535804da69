/**
 * Typed services: declare a service once (its channel name, request and reply types, and optionally
 * runtime validators) and get a typed caller and a typed handler for it. Validators are any
 * Standard Schema (https://standardschema.dev) implementation: zod, valibot, arktype, and others.
 *
 * Each side validates what it receives and what it sends: the caller its payload before sending and the
 * reply it gets; the responder the payload it gets and the reply its handler returns. A failure is a typed
 * error on the side that detects it: `ValidationError` locally, and for the responder's findings an error
 * reply (`RemoteError` with code `INVALID_REQUEST` or `INVALID_REPLY`) that the caller receives.
 */
import { assertChannelName } from './channel-name.ts'
import type { Client } from './client.ts'
import { ValidationError, type ValidationIssue } from './errors.ts'
import type { ClientOptions, RequestOptions, ServeOptions } from './options.ts'
import { serve } from './serve.ts'
import type { HandlerContext, Server } from './server.ts'

/** The Standard Schema interface (v1), as much of it as this library uses. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1
    readonly vendor: string
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>
    readonly types?: { readonly input: Input; readonly output: Output }
  }
}

type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: readonly { readonly message: string; readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[] }[] }

/** The output type of a Standard Schema. */
export type InferOutput<Schema> = Schema extends StandardSchemaV1<unknown, infer Output> ? Output : never

/** How a service is declared. */
export interface ServiceDefinition<Request, Reply> {
  /** The channel the service is served on. */
  name: string
  /** Validates (and may transform) request payloads, on both sides. */
  request?: StandardSchemaV1<unknown, Request>
  /** Validates (and may transform) replies, on both sides. */
  reply?: StandardSchemaV1<unknown, Reply>
}

/** A typed handler of a service. */
export type ServiceHandler<Request, Reply> = (payload: Request, context: HandlerContext) => Reply | Promise<Reply>

/** A declared service: use it to call and to serve with the declared types. */
export interface Service<Request, Reply> {
  readonly name: string
  /** Sends a request through `client` and resolves with the validated reply. */
  request(client: Client, payload: Request, options?: RequestOptions): Promise<Reply>
  /** Starts a responder through `client`, or on its own connection when given connection options. */
  serve(clientOrOptions: Client | ClientOptions, handler: ServiceHandler<Request, Reply>, options?: ServeOptions): Promise<Server>
}

/**
 * Declares a service. The types come from the schemas when given, otherwise from the type parameters:
 * `defineService<{ text: string }, number>({ name: 'word-count' })`.
 */
export function defineService<Request = unknown, Reply = unknown>(definition: ServiceDefinition<Request, Reply>): Service<Request, Reply> {
  const { name, request: requestSchema, reply: replySchema } = definition
  assertChannelName(name)
  return {
    name,
    async request(client, payload, options) {
      const checked = await validate(requestSchema, payload, `request to ${name}`)
      const reply = await client.request<unknown>(name, checked, options)
      return validate(replySchema, reply, `reply from ${name}`)
    },
    async serve(clientOrOptions, handler, options) {
      const wrapped = async (payload: unknown, context: HandlerContext): Promise<Reply> => {
        const checked = await validateOrRethrow(requestSchema, payload, `request to ${name}`, 'INVALID_REQUEST')
        const reply = await handler(checked, context)
        return validateOrRethrow(replySchema, reply, `reply from ${name}`, 'INVALID_REPLY')
      }
      if (isClient(clientOrOptions)) return clientOrOptions.serve(name, wrapped, options)
      return serve(clientOrOptions, name, wrapped, options)
    },
  }
}

async function validate<T>(schema: StandardSchemaV1<unknown, T> | undefined, value: unknown, what: string): Promise<T> {
  if (schema === undefined) return value as T
  const result = await schema['~standard'].validate(value)
  if (result.issues !== undefined) throw new ValidationError(`invalid ${what}`, result.issues.map(toIssue))
  return result.value
}

/** In a handler: a validation failure becomes an error reply with `code`. */
async function validateOrRethrow<T>(schema: StandardSchemaV1<unknown, T> | undefined, value: unknown, what: string, code: string): Promise<T> {
  try {
    return await validate(schema, value, what)
  } catch (error) {
    if (error instanceof ValidationError) {
      throw Object.assign(new Error(error.message + ': ' + error.issues.map(formatIssue).join('; ')), { code })
    }
    throw error
  }
}

function toIssue(issue: { message: string; path?: readonly (PropertyKey | { key: PropertyKey })[] }): ValidationIssue {
  return {
    message: issue.message,
    path: (issue.path ?? []).map((segment) => (typeof segment === 'object' && segment !== null ? segment.key : segment)),
  }
}

function formatIssue(issue: ValidationIssue): string {
  return issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message
}

function isClient(value: Client | ClientOptions): value is Client {
  return typeof (value as Client).request === 'function' && typeof (value as Client).serve === 'function'
}
