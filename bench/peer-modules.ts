// Loads a system's peer code by name, in the child processes. Dynamic, so that a child only loads the
// drivers of the system it runs (and so that the pgrr peers load even before the core exists).
import { SYSTEMS, isSystemName } from './systems.ts'
import type { Peer } from './peer.ts'

export async function loadPeer(system: string): Promise<Peer> {
  if (!isSystemName(system)) throw new Error(`unknown system "${system}"`)
  const { peerModule, unavailable } = SYSTEMS[system]
  if (!peerModule) throw new Error(`${system} cannot run here: ${unavailable ?? 'no peer code'}`)
  const module = (await import(new URL(peerModule, import.meta.url).href)) as { peer?: Peer }
  if (!module.peer) throw new Error(`${peerModule} does not export "peer"`)
  return module.peer
}
