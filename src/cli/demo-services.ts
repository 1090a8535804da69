/**
 * The toy services `pgrr demo` serves in-process: stand-ins for the kind of work pgrr is for (a model or
 * another runtime answering SQL and TypeScript callers).
 */
import type { Handler } from '../responder/handler.ts'

const dimensions = 8

/** Fails the way a real handler would: with a message and a stable code the caller sees. */
class DemoError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** `embed`: text → a unit vector of 8 numbers, derived from the characters (a stand-in for a model). */
export const embed: Handler<unknown, number[]> = (text) => {
  if (typeof text !== 'string' || text.trim() === '') throw new DemoError('EMPTY_INPUT', 'nothing to embed: send some text')
  const vector = new Array<number>(dimensions).fill(0)
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    for (let d = 0; d < dimensions; d++) vector[d] = (vector[d] ?? 0) + Math.sin(code * (d + 1) + i)
  }
  const norm = Math.hypot(...vector) || 1
  return vector.map((value) => Math.round((value / norm) * 1000) / 1000)
}

/** `uppercase`: text → the same text in capitals. */
export const uppercase: Handler<unknown, string> = (text) => String(text).toUpperCase()

/** `sleep`: waits the number of milliseconds it is sent, or until the caller gives up. */
export const sleep: Handler<unknown, string> = (ms, context) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(`slept ${Number(ms)} ms`), Number(ms))
    context.signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer)
        reject(context.signal.reason as Error)
      },
      { once: true },
    )
  })

export const demoServices: Readonly<Record<string, Handler>> = { embed, uppercase, sleep }
