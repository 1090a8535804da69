/**
 * Channel (service) names: 1 to 63 bytes of UTF-8, no control characters. The same rule as
 * pgrr_valid_channel() in SQL, checked here first so a bad name fails before any round trip.
 */
import { InvalidChannelError } from './errors.ts'

// C0 controls, DEL and C1 controls: the class pgrr_valid_channel() rejects.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const controlCharacters = /[\u0000-\u001f\u007f-\u009f]/

/** Throws `InvalidChannelError` unless `channel` is a valid channel name. */
export function assertChannelName(channel: unknown): asserts channel is string {
  // A lone surrogate has no UTF-8 form: it would reach the database as U+FFFD, the name of another channel.
  if (typeof channel !== 'string' || controlCharacters.test(channel) || !channel.isWellFormed()) throw new InvalidChannelError(channel)
  const bytes = Buffer.byteLength(channel)
  if (bytes < 1 || bytes > 63) throw new InvalidChannelError(channel)
}
