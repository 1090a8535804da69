/**
 * Typed services: declare a service once (its channel name, request and reply types, and optionally
 * runtime validators) and get a typed caller and a typed handler for it. Validators are any
 * Standard Schema (https://standardschema.dev) implementation: zod, valibot, arktype, and others.
 *
 * Each side validates what it receives and what it sends: the caller its payload before sending and the
 * reply it gets; the responder the payload it gets and the reply its handler returns. A failure is a typed
 * error on the side that detects it: `ValidationError` locally, and for the responder's findings an error
 * reply (`RemoteError` with code `INVALID_REQUEST` or `INVALID_REPLY`) that the caller receives.
 *
 * What travels is always a schema's input, and only the receiving side transforms: the caller checks its
 * payload and sends it as given, the responder's handler gets the request schema's output; the handler
 * returns the reply schema's input, which is checked and sent as returned, and the caller gets the reply
 * schema's output. A transform then runs once, and its output (which the schema would not accept again,
 * `z.string().transform((s) => s.split(','))`) never has to pass the schema a second time.
 */
import { assertChannelName } from './channel-name.ts'
import type { Client } from './client/client.ts'
import { ValidationError, type ValidationIssue } from './errors.ts'
import type { ClientOptions, RequestOptions, ServeOptions } from './options.ts'
import { serve } from './serve.ts'
import type { HandlerContext } from './responder/handler.ts'
import type { Server } from './responder/server.ts'

/** The Standard Schema interface (v1), as much of it as this library uses. */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1
    readonly vendor: string
    readonly validate: (value: unknown) => StandardResult<Output> | Promise<StandardResult<Output>>
    readonly types?: { readonly input: Input; readonly output: Output }
    /** Standard JSON Schema (https://standardschema.dev): what a validator that can describe itself offers. */
    readonly jsonSchema?: { readonly input: (options: { readonly target: string }) => Record<string, unknown> }
  }
}

type StandardResult<Output> =
  | { readonly value: Output; readonly issues?: undefined }
  | { readonly issues: readonly { readonly message: string; readonly path?: readonly (PropertyKey | { readonly key: PropertyKey })[] }[] }

/** The input type of a Standard Schema: what it accepts. */
export type InferInput<Schema> = Schema extends StandardSchemaV1<infer Input, unknown> ? Input : never

/** The output type of a Standard Schema: what it makes of what it accepts. */
export type InferOutput<Schema> = Schema extends StandardSchemaV1<unknown, infer Output> ? Output : never

/**
 * How a service is declared. `Request` is what callers pass and `Reply` what they get; `Payload` is what the
 * handler gets and `Result` what it returns (the same two unless the schemas transform).
 */
export interface ServiceDefinition<Request, Reply, Payload = Request, Result = Reply> {
  /** The channel the service is served on. */
  name: string
  /**
   * Validates request payloads on both sides; a transform runs at the responder only (the caller sends its
   * payload as given). Its input type is the callers', its output the handler's.
   */
  request?: StandardSchemaV1<Request, Payload>
  /**
   * Validates replies on both sides; a transform runs at the caller only (the responder sends what its
   * handler returned). Its input type is what the handler returns, its output what callers get.
   */
  reply?: StandardSchemaV1<Result, Reply>
}

/** A typed handler of a service: gets the request schema's output, returns the reply schema's input. */
export type ServiceHandler<Payload, Result> = (payload: Payload, context: HandlerContext) => Result | Promise<Result>

/** A declared service: use it to call and to serve with the declared types. */
export interface Service<Request, Reply, Payload = Request, Result = Reply> {
  readonly name: string
  /** Sends a request through `client` and resolves with the validated (and transformed) reply. */
  request(client: Client, payload: Request, options?: RequestOptions): Promise<Reply>
  /** Starts a responder through `client`, or on its own connection when given connection options. */
  serve(clientOrOptions: Client | ClientOptions, handler: ServiceHandler<Payload, Result>, options?: ServeOptions): Promise<Server>
}

/**
 * Declares a service. The types come from the schemas when given (their input and output types), otherwise
 * from the type parameters: `defineService<{ text: string }, number>({ name: 'word-count' })`.
 */
export function defineService<Request = unknown, Reply = unknown, Payload = Request, Result = Reply>(
  definition: ServiceDefinition<Request, Reply, Payload, Result>,
): Service<Request, Reply, Payload, Result> {
  const { name, request: requestSchema, reply: replySchema } = definition
  assertChannelName(name)
  return {
    name,
    async request(client, payload, options) {
      // Checked, and sent as given: the responder transforms it.
      await validate(requestSchema, payload, `request to ${name}`)
      const reply = await client.request<unknown>(name, payload, options)
      return validate(replySchema, reply, `reply from ${name}`)
    },
    async serve(clientOrOptions, handler, options) {
      const wrapped = async (payload: unknown, context: HandlerContext): Promise<Result> => {
        const checked = await validateOrRethrow(requestSchema, payload, `request to ${name}`, 'INVALID_REQUEST')
        const reply = await handler(checked, context)
        // Checked, and sent as returned: the caller transforms it.
        await validateOrRethrow(replySchema, reply, `reply from ${name}`, 'INVALID_REPLY')
        return reply
      }
      // What travels is each schema's input: that is what `pgrr info` shows, when the validator can say it.
      const described: ServeOptions = {
        ...definedSchema('requestSchema', requestSchema),
        ...definedSchema('replySchema', replySchema),
        ...options,
      }
      if (isClient(clientOrOptions)) return clientOrOptions.serve(name, wrapped, described)
      return serve(clientOrOptions, name, wrapped, described)
    },
  }
}

/** The schema's output for `value` (`value` itself without a schema); a `ValidationError` when it is refused. */
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

/**
 * `{ [key]: JSON Schema of what `schema` accepts }` when its validator implements Standard JSON Schema (zod 4
 * does; valibot and others need a converter of their own: pass `requestSchema`/`replySchema` to `serve()`).
 */
function definedSchema(key: 'requestSchema' | 'replySchema', schema: StandardSchemaV1<unknown, unknown> | undefined): ServeOptions {
  const convert = schema?.['~standard'].jsonSchema?.input
  if (typeof convert !== 'function') return {}
  try {
    return { [key]: convert({ target: 'draft-2020-12' }) }
  } catch {
    // "May throw if conversion is not supported" (a transform, a custom check): the service is served without it.
    return {}
  }
}

function isClient(value: Client | ClientOptions): value is Client {
  return typeof (value as Client).request === 'function' && typeof (value as Client).serve === 'function'
}
