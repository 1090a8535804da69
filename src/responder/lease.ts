/**
 * The leases of one client's responders (04_liveness.sql, pgrr_renew in 05_registration.sql): renewed
 * every half second while the event loop turns, all of them in one statement, which also writes each
 * responder's counters (for `pgrr status`) and its handler statistics when they changed. A loop blocked by a
 * CPU-bound handler, or a process stopped, lets them run out (pgrr_lease(), 1.5 s), and sends then prefer
 * the responders that still turn; their sessions, which still hold the responder locks, say they are not
 * dead. A lease says that the process turns, so one statement on the responders' session renews every
 * registration of the process: a process serving 100 channels ran 200 renewals and 20 counter reports a
 * second, a third of its server CPU and two fifths of its own while idle (docs/benchmarks.md, "One channel or
 * a hundred").
 */
import type { Logger } from '../logger.ts'
import type { JobCounters } from './jobs.ts'
import type { Statements } from '../statements.ts'
import type { ResponderContext } from './registration.ts'
import type { ServiceStats } from './service-stats.ts'

/** How often the leases are renewed: a third of their length, so that a late timer or two never lets one lapse. */
const renewEveryMs = 500

/** A responder, as its lease is renewed. */
export interface LeaseMember extends Pick<ResponderContext, 'registration' | 'query'> {
  /** Whether there is work to keep the lease for (running or draining: retryable requests it holds are
   * taken back when its lease runs out). */
  readonly active: () => boolean
  /** Handler statistics to write with the renewal when they changed (16_services.sql). */
  readonly stats?: ServiceStats
  /** The counters to write with every renewal. */
  readonly counters?: () => JobCounters
}

/** The leases of the responders of one client. */
export class Leases {
  readonly #statements: Statements
  readonly #logger: Logger
  readonly #members = new Set<LeaseMember>()
  #timer: NodeJS.Timeout | undefined
  /** A renewal is on its way. */
  #renewing = false

  constructor(options: { statements: Statements; logger: Logger }) {
    this.#statements = options.statements
    this.#logger = options.logger
  }

  /** A responder starts: its lease is renewed from now on, until the returned leave() is called. */
  join(member: LeaseMember): () => void {
    this.#members.add(member)
    // Unreferenced: the sessions keep the process alive.
    this.#timer ??= setInterval(() => void this.#renew(), renewEveryMs)
    this.#timer.unref()
    return () => {
      if (this.#members.delete(member) && this.#members.size === 0) {
        clearInterval(this.#timer)
        this.#timer = undefined
      }
    }
  }

  /**
   * One renewal of every active registration, on their session (the client's responders share one). One at
   * a time: a session busy with a long statement (a large reply, a wait on a row lock) gets no pile of
   * them. A failure (the session lost) is logged: the next renewal goes on the next session.
   */
  async #renew(): Promise<void> {
    if (this.#renewing) return
    const members: LeaseMember[] = []
    const ids: number[] = []
    for (const member of this.#members) {
      const registration = member.registration()
      if (registration === undefined || !member.active()) continue
      members.push(member)
      ids.push(registration.responderId)
    }
    const writer = members[0]
    if (writer === undefined) return
    this.#renewing = true
    try {
      // Statistics ride on the renewal when they changed since the last one, counters always: the renewal
      // rewrites each row anyway.
      const stats = members.map((member) => member.stats?.unwritten())
      const statsValues = stats.some((entry) => entry !== undefined) ? stats.map((entry) => entry?.json ?? null) : null
      const counters = members.map((member) => counterRow(member.counters?.()))
      await writer.query(this.#statements.renew, [ids[0], ids, statsValues, counters])
      stats.forEach((entry, i) => entry !== undefined && members[i]?.stats?.written(entry.version))
    } catch (error) {
      this.#logger.debug({ err: error }, 'lease renewal failed')
    } finally {
      this.#renewing = false
    }
  }
}

/** A responder's counters as pgrr_renew takes them: a row of five, or of nulls. */
function counterRow(counters: JobCounters | undefined): (number | null)[] {
  if (counters === undefined) return [null, null, null, null, null]
  return [counters.handledTotal, counters.failedTotal, counters.handledLastMinute, counters.failedLastMinute, counters.running]
}
