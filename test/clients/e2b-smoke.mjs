// The E2B JS SDK, unmodified, against banger's E2B API: the smoke
// scenario e2b-sdk runs this with only E2B_API_URL, E2B_SANDBOX_URL and
// E2B_API_KEY set (and TEMPLATE, the template name it mapped). Each step
// prints a JSON line {"step", "ms"}; the last is {"total_ms"}. Any
// failed check throws, and node exits non-zero.
import { Sandbox, CommandExitError, NotFoundError, SandboxNotFoundError } from 'e2b'

const template = process.env.TEMPLATE
const outside = process.env.OUTSIDE // a web server on :8080 of the scenario's outside world
const t0 = Date.now()
const step = async (name, fn) => {
  const start = Date.now()
  const out = await fn()
  console.log(JSON.stringify({ step: name, ms: Date.now() - start }))
  return out
}
const check = (cond, what, got) => {
  if (!cond) throw new Error(`check failed: ${what}${got === undefined ? '' : `: got ${JSON.stringify(got)}`}`)
}
const until = async (what, cond, ms = 120_000) => {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
const rejects = async (what, fn, test) => {
  try {
    await fn()
  } catch (e) {
    check(test(e), `${what} failed the wrong way`, `${e.name}: ${e.message}`)
    return e
  }
  throw new Error(`${what}: did not fail`)
}

const sbx = await step('create', () =>
  Sandbox.create(template, { timeoutMs: 600_000, metadata: { suite: 'smoke' }, envs: { GREETING: 'hello' } })
)
check(/^i[a-z0-9]{19}$/.test(sbx.sandboxId), 'a sandbox ID of E2B shape', sbx.sandboxId)

await step('commands.run', async () => {
  const r = await sbx.commands.run('echo hi; echo oops >&2')
  check(r.exitCode === 0 && r.stdout === 'hi\n' && r.stderr === 'oops\n', 'echo', r)
  const env = await sbx.commands.run('echo $GREETING $EXTRA; pwd', { envs: { EXTRA: 'there' }, cwd: '/tmp' })
  check(env.stdout === 'hello there\n/tmp\n', 'sandbox and command env, cwd', env.stdout)
  const root = await sbx.commands.run('id -u', { user: 'root' })
  check(root.stdout === '0\n', 'user root', root.stdout)
  const who = await sbx.commands.run('whoami; pwd')
  check(who.stdout === 'user\n/home/user\n', "E2B's default user, in its home", who.stdout)
  const e = await rejects('exit 3', () => sbx.commands.run('echo before; exit 3'), (e) => e instanceof CommandExitError)
  check(e.exitCode === 3 && e.stdout === 'before\n', 'the exit error carries code and output', { code: e.exitCode, out: e.stdout })
})

await step('commands.background', async () => {
  const seen = []
  const h = await sbx.commands.run('for i in 1 2 3; do echo tick$i; sleep 0.2; done; sleep 600', {
    background: true,
    onStdout: (d) => seen.push(d),
  })
  await until('three ticks', () => seen.join('').includes('tick3'))
  const list = await sbx.commands.list()
  check(list.some((p) => p.pid === h.pid), 'commands.list shows it', list)
  check(await sbx.commands.kill(h.pid), 'commands.kill')
  await rejects('wait on a killed command', () => h.wait(), (e) => e instanceof CommandExitError)
  const after = await sbx.commands.list()
  check(!after.some((p) => p.pid === h.pid), 'a killed command is gone from the list', after)
  const ps = await sbx.commands.run("ps -eo args | grep -c '[s]leep 600' || true")
  check(ps.stdout.trim() === '0', 'and from the guest', ps.stdout)
})

await step('commands.stdin+timeout', async () => {
  const h = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(h.pid, 'piped\n')
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  check(r.stdout === 'piped\n', 'stdin through cat', r.stdout)
  await rejects('a command over its timeout', () => sbx.commands.run('sleep 30', { timeoutMs: 1500 }), (e) => /timeout|deadline|aborted/i.test(`${e.name} ${e.message}`))
  const c = await sbx.commands.run('sleep 2; echo late', { background: true })
  const again = await sbx.commands.connect(c.pid)
  const r2 = await again.wait()
  check(r2.stdout.includes('late'), 'commands.connect to a running command', r2.stdout)
})

await step('files', async () => {
  await sbx.files.write('/tmp/d/a.txt', 'A content')
  check((await sbx.files.read('/tmp/d/a.txt')) === 'A content', 'write then read')
  const bytes = new Uint8Array([0, 1, 2, 250, 255])
  await sbx.files.write('/tmp/d/bin', bytes)
  const back = await sbx.files.read('/tmp/d/bin', { format: 'bytes' })
  check(Buffer.from(back).equals(Buffer.from(bytes)), 'binary round trip', Array.from(back))
  const list = await sbx.files.list('/tmp/d')
  check(list.map((e) => e.name).sort().join() === 'a.txt,bin', 'list', list.map((e) => e.name))
  check(await sbx.files.exists('/tmp/d/a.txt'), 'exists')
  check(!(await sbx.files.exists('/tmp/d/none')), 'exists of nothing')
  check(await sbx.files.makeDir('/tmp/d/sub'), 'makeDir')
  check(!(await sbx.files.makeDir('/tmp/d/sub')), 'makeDir again says it was there')
  const moved = await sbx.files.rename('/tmp/d/a.txt', '/tmp/d/sub/b.txt')
  check(moved.path === '/tmp/d/sub/b.txt', 'rename', moved)
  const info = await sbx.files.getInfo('/tmp/d/sub/b.txt')
  check(info.type === 'file' && info.size === 9, 'getInfo', info)
  const deep = await sbx.files.list('/tmp/d', { depth: 2 })
  check(deep.some((e) => e.path === '/tmp/d/sub/b.txt'), 'list depth 2', deep.map((e) => e.path))
  await sbx.files.remove('/tmp/d/sub')
  check(!(await sbx.files.exists('/tmp/d/sub/b.txt')), 'remove')
  await rejects('read of nothing', () => sbx.files.read('/tmp/d/none'), (e) => e instanceof NotFoundError)
  await sbx.files.write('notes/n.txt', 'mine')
  const mine = await sbx.commands.run('stat -c %U notes notes/n.txt && echo more >> notes/n.txt && cat /home/user/notes/n.txt')
  check(mine.stdout === 'user\nuser\nminemore\n', "a relative write is the default user's, in its home", mine.stdout)
  const ni = await sbx.files.getInfo('notes/n.txt')
  check(ni.owner === 'user' && ni.group === 'user', 'getInfo names the owner and group', ni)
  await sbx.commands.run('ln -s n.txt notes/link')
  const li = await sbx.files.getInfo('notes/link')
  check(li.symlinkTarget === '/home/user/notes/n.txt', 'a relative symlink target, made absolute', li)
  const r = await sbx.commands.run('cat /tmp/d/bin | od -An -tu1')
  check(r.stdout.trim().split(/\s+/).join() === '0,1,2,250,255', 'the guest sees the bytes', r.stdout)
})

await step('files.watch', async () => {
  await sbx.files.makeDir('/tmp/w/sub')
  const seen = []
  const handle = await sbx.files.watchDir('/tmp/w', (e) => seen.push(e), { recursive: true })
  let i = 0
  await until('a write event under the watched directory', async () => {
    await sbx.files.write(`/tmp/w/sub/f${i++}.txt`, 'x')
    return seen.some((e) => e.name.startsWith('sub/f') && (e.type === 'write' || e.type === 'create'))
  })
  await sbx.files.remove('/tmp/w/sub/f0.txt')
  await until('a remove event', async () => seen.some((e) => e.name === 'sub/f0.txt' && e.type === 'remove'))
  await handle.stop()
})

await step('files.upload+download', async () => {
  const form = new FormData()
  form.append('file', new Blob(['uploaded through a signed URL']), 'up.txt')
  const up = await sbx.uploadUrl('/tmp/up.txt', { useSignatureExpiration: 60 })
  let res = await fetch(up, { method: 'POST', body: form })
  check(res.ok, 'upload by URL', res.status)
  const down = await sbx.downloadUrl('/tmp/up.txt', { useSignatureExpiration: 60 })
  res = await fetch(down)
  check(res.ok && (await res.text()) === 'uploaded through a signed URL', 'download by URL', res.status)
  res = await fetch(down.replace(/signature=[^&]+/, 'signature=v1_forged'))
  check(res.status === 401, 'a forged signature is refused', res.status)
})

await step('network', async () => {
  // This scenario's daemon is on the user network: the sandbox reaches
  // the outside through its VMM; allow-lists are the bridge network's
  // (smoke vm-egress proves them live), and its way out changes only
  // while stopped. Both refusals say so.
  const reach = async () =>
    (await sbx.commands.run(`timeout 5 bash -c 'exec 3<>/dev/tcp/${outside}/8080; printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3' 2>/dev/null || echo unreachable`)).stdout
  check((await reach()).includes('outside'), 'the outside by default', await reach())
  await rejects('an allow-list on the user network', () => Sandbox.updateNetwork(sbx.sandboxId, { allowOut: [outside] }), (e) => e.message.includes('bridge network'))
  await rejects('closing a user-network way out while running', () => Sandbox.updateNetwork(sbx.sandboxId, { allowInternetAccess: false }), (e) => e.message.includes('only while it is stopped'))
  await Sandbox.updateNetwork(sbx.sandboxId, {})
  check((await reach()).includes('outside'), 'the internet as it was', await reach())
})

await step('pty', async () => {
  const out = []
  const pty = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => out.push(Buffer.from(d).toString()) })
  await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; echo pty-$((40+2)); exit\n'))
  await pty.wait()
  const text = out.join('')
  check(text.includes('30 100') && text.includes('pty-42'), 'a terminal of the asked size', text)
})

await step('pause+connect', async () => {
  await sbx.files.write('/tmp/kept.txt', 'kept')
  // Processes run on across the pause, in its saved memory: one to
  // connect to again, one whose stream from before the pause goes on.
  const sleeper = await sbx.commands.run('sleep 3600', { background: true })
  const waiter = await sbx.commands.run('while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after-resume', { background: true })
  check(await sbx.pause(), 'pause')
  const listed = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  check(listed.some((s) => s.sandboxId === sbx.sandboxId), 'listed as paused', listed)
  const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 })
  check((await again.files.read('/tmp/kept.txt')) === 'kept', 'the file came back with it')
  check(await again.isRunning(), 'running again')
  const procs = await again.commands.list()
  check(procs.some((p) => p.pid === sleeper.pid) && procs.some((p) => p.pid === waiter.pid), 'its processes ran on', procs)
  const joined = await again.commands.connect(sleeper.pid)
  check(joined.pid === sleeper.pid, 'connected to a process from before the pause')
  await again.files.write('/tmp/go', '')
  const w = await waiter.wait()
  check(w.exitCode === 0 && w.stdout === 'after-resume\n', 'a stream from before the pause went on', w)
  check(await again.commands.kill(sleeper.pid), 'killed after the resume')
  await rejects('waiting on a killed process', () => joined.wait(), (e) => e instanceof CommandExitError)
  // A filesystem-only pause: the VM stops; a connect boots it from its disk.
  await sbx.files.write('/home/user/disk.txt', 'on disk')
  await sbx.commands.run('sync')
  check(await sbx.pause({ keepMemory: false }), 'pause without memory')
  const cold = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 })
  check((await cold.files.read('/home/user/disk.txt')) === 'on disk', 'the disk came back with it')
  check((await cold.commands.run('whoami')).stdout === 'user\n', 'and its user')
})

const forks = await step('fork', async () => {
  await sbx.files.write('/tmp/origin.txt', 'from the original')
  const copies = await sbx.fork({ count: 2, timeoutMs: 600_000 })
  check(copies.length === 2 && copies.every((c) => !(c instanceof Error)), 'two copies', copies.map(String))
  for (const c of copies) {
    check((await c.files.read('/tmp/origin.txt')) === 'from the original', `copy ${c.sandboxId} has the file`)
    const r = await c.commands.run('echo $GREETING')
    check(r.stdout === 'hello\n', 'a copy keeps the sandbox env', r.stdout)
  }
  return copies
})

await step('list+info+metrics', async () => {
  const all = await Sandbox.list({ query: { metadata: { suite: 'smoke' } } }).nextItems()
  const ids = all.map((s) => s.sandboxId)
  check([sbx.sandboxId, ...forks.map((f) => f.sandboxId)].every((id) => ids.includes(id)), 'list by metadata', ids)
  const info = await sbx.getInfo()
  check(info.templateId === template && info.metadata.suite === 'smoke' && info.state === 'running', 'getInfo', info)
  const m = await sbx.getMetrics()
  check(m.length > 0 && m[0].memTotal > 0 && m[0].cpuCount > 0, 'metrics', m)
})

await step('snapshot', async () => {
  const src = forks[1]
  await src.files.write('/tmp/snap.txt', 'in the snapshot')
  const snap = await src.createSnapshot({ name: 'golden' })
  check(snap.names.some((n) => n.includes('golden')), 'a named snapshot', snap)
  check(await src.kill(), 'kill the sandbox it was taken of')
  const listed = await Sandbox.listSnapshots({ name: 'golden' }).nextItems()
  check(listed.some((s) => s.snapshotId === snap.snapshotId), 'listed by name', listed)
  const from = await Sandbox.create(snap.snapshotId, { timeoutMs: 600_000 })
  check((await from.files.read('/tmp/snap.txt')) === 'in the snapshot', 'a sandbox from it has the file')
  check((await from.commands.run('echo $GREETING')).stdout === 'hello\n', 'and the environment')
  check(await from.kill(), 'kill the sandbox made from it')
  check(await Sandbox.deleteSnapshot(snap.snapshotId), 'delete the snapshot')
  check(!(await Sandbox.deleteSnapshot(snap.snapshotId)), 'deleting it again says it was gone')
})

await step('timeout', async () => {
  const short = await Sandbox.create(template, { timeoutMs: 4_000 })
  await until('the timeout to kill it', async () => !(await short.isRunning().catch(() => false)), 180_000)
  await rejects('connect to a sandbox past its timeout', () => Sandbox.connect(short.sandboxId), (e) => e instanceof SandboxNotFoundError || e instanceof NotFoundError)
})

await step('kill', async () => {
  for (const s of [sbx, forks[0]]) check(await s.kill(), `kill ${s.sandboxId}`)
  const left = await Sandbox.list().nextItems()
  check(left.length === 0, 'nothing left', left.map((s) => s.sandboxId))
  check(!(await Sandbox.kill(sbx.sandboxId)), 'killing it again says it was gone')
})

console.log(JSON.stringify({ total_ms: Date.now() - t0 }))
