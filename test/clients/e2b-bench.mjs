// One sample of bench-e2b: Sandbox.create() then commands.run('echo hi')
// through the E2B JS SDK, timed in-process (node's start is not counted),
// then the sandbox killed (timed apart). Prints {"create_run_ms",
// "run_ms", "kill_ms"}; RUNS=N more commands.run on the same sandbox
// print {"run_ms"} each.
import { Sandbox } from 'e2b'

const t0 = performance.now()
const sbx = await Sandbox.create(process.env.TEMPLATE)
const t1 = performance.now()
const r = await sbx.commands.run('echo hi')
const t2 = performance.now()
if (r.stdout !== 'hi\n') throw new Error(`echo hi: ${JSON.stringify(r.stdout)}`)
for (let i = 0; i < Number(process.env.RUNS || 0); i++) {
  const s = performance.now()
  await sbx.commands.run('echo hi')
  console.log(JSON.stringify({ run_ms: performance.now() - s }))
}
const t3 = performance.now()
await sbx.kill()
console.log(JSON.stringify({ create_run_ms: t2 - t0, create_ms: t1 - t0, run_ms: t2 - t1, kill_ms: performance.now() - t3 }))
