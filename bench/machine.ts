// Describes the machine a run happened on, for the JSON and the docs: numbers mean little without it.
import os from 'node:os'
import type { Sql } from 'postgres'

export interface MachineDescription {
  cpus: number
  cpuModel: string
  memoryGiB: number
  os: string
  node: string
  postgres: string
  /** Broker versions, as reported by their responders (only for brokers that ran). */
  servers: Record<string, string>
}

export async function describeMachine(sql: Sql): Promise<MachineDescription> {
  const [{ server_version: postgresVersion }] = await sql<[{ server_version: string }]>`show server_version`
  const cpus = os.cpus()
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    postgres: postgresVersion,
    servers: {},
  }
}
