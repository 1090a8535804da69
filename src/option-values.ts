/**
 * Checks of option values, shared by the client and the server: a value out of range fails at once with
 * `InvalidOptionError`, before anything is sent, rather than later as an error of the database or a timer
 * Node silently clamps.
 */
import { InvalidOptionError } from './errors.ts'

/** The longest duration Node's timers and the protocol's `int` milliseconds can hold: about 24.8 days. */
export const maxDurationMs = 2_147_483_647

/** An integer from 1 to `max`. */
export function integerOption(value: unknown, name: string, max = maxDurationMs): number {
  if (!(typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= max)) {
    throw new InvalidOptionError(`${name} must be an integer from 1 to ${max}, got ${String(value)}`)
  }
  return value
}

/** A duration in milliseconds, above 0 and at most {@link maxDurationMs}; a fraction rounds up. */
export function durationOption(value: unknown, name: string): number {
  if (!(typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= maxDurationMs)) {
    throw new InvalidOptionError(`${name} must be a number of milliseconds above 0 and at most ${maxDurationMs}, got ${String(value)}`)
  }
  return Math.ceil(value)
}

/** One of `allowed`. */
export function choiceOption<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) {
    throw new InvalidOptionError(`${name} must be ${allowed.map((choice) => `'${choice}'`).join(' or ')}, got ${String(value)}`)
  }
  return value as T
}
