// A scripted coding agent driving `banger mcp` through the TypeScript
// SDK's client (npm @modelcontextprotocol/sdk) over stdio, as an agent
// host would: a failing test, a checkpoint, a broken tree rolled back,
// three fixes tried in three forks, the passing one's diff accepted into
// the host checkout, everything deleted; and the refusals an agent must
// meet. The smoke suite runs it (mcp-agent-loop); it prints one JSON
// object a step and a last {"total_ms"} line, and exits 1 on the first
// step that goes wrong.
//
// Environment: BANGER (the banger binary), ROOT (the server's --root),
// PROJECT (a git checkout under ROOT with calc.sh), IMAGE, PERSON (a VM a
// person made, which the server must not touch).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const { BANGER, ROOT, PROJECT, IMAGE, PERSON } = process.env;
const started = Date.now();
const client = new Client({ name: "banger-agent-loop", version: "1.0.0" });
await client.connect(new StdioClientTransport({
  command: BANGER,
  args: ["mcp", "--name", "loop", "--root", ROOT],
  env: process.env,
  stderr: "inherit",
}));

// call runs a tool; a tool error fails the loop unless refused names
// what it must say.
async function call(name, args, refused) {
  const t0 = Date.now();
  const r = await client.callTool({ name, arguments: args });
  const text = r.content?.[0]?.text ?? "";
  if (refused !== undefined) {
    if (!r.isError || !text.includes(refused)) {
      throw new Error(`${name} ${JSON.stringify(args)}: want a refusal saying ${JSON.stringify(refused)}, got ${text}`);
    }
  } else if (r.isError) {
    throw new Error(`${name} ${JSON.stringify(args)}: ${text}`);
  }
  console.log(JSON.stringify({ step: name, ms: Date.now() - t0, refused: refused !== undefined }));
  return r.structuredContent;
}

const check = (ok, what) => { if (!ok) throw new Error(what); };
const test = async (name) => (await call("sandbox_exec", { name, command: "sh test.sh" })).exit_code;

try {
  const tools = await client.listTools();
  const names = tools.tools.map((t) => t.name);
  for (const want of ["sandbox_create", "sandbox_exec", "sandbox_fork", "checkpoint_restore", "file_write", "workspace_accept", "egress_allow"]) {
    check(names.includes(want), `no tool ${want} among ${names}`);
  }

  const sb = await call("sandbox_create", { image: IMAGE, name: "loop", memory: "256M", network: "none" });
  check(sb.creator === "mcp:loop", `creator ${sb.creator}`);
  const ws = await call("workspace_sync_in", { name: "loop", path: PROJECT });
  check(ws.dir === "/workspace", `workspace at ${ws.dir}`);

  // A failing test.
  await call("file_write", { name: "loop", path: "/workspace/test.sh",
    content: '. ./calc.sh\n[ "$(add 2 3)" = 5 ] && echo PASS || { echo FAIL: got "$(add 2 3)"; exit 1; }\n' });
  check(await test("loop") === 1, "the test passed before any fix");

  // Checkpoint, break the tree, roll back.
  await call("checkpoint_create", { name: "loop", tag: "red" });
  await call("file_remove", { name: "loop", path: "/workspace/calc.sh" });
  const broken = await call("sandbox_exec", { name: "loop", command: "sh test.sh" });
  check(broken.exit_code !== 0 && broken.stderr.includes("calc.sh"), `broken tree: ${JSON.stringify(broken)}`);
  await call("checkpoint_restore", { name: "loop", tag: "red" });
  const back = await call("file_stat", { name: "loop", path: "/workspace/calc.sh" });
  check(back.type === "file", "calc.sh not back after the restore");

  // Three fixes in three forks; keep the one whose test passes.
  const fork = await call("sandbox_fork", { name: "loop", count: 3, prefix: "try" });
  check(fork.copies.length === 3 && fork.copies.every((c) => !c.error), `fork: ${JSON.stringify(fork)}`);
  const fixes = ["*", "+", "/"];
  let kept;
  for (const [i, copy] of fork.copies.entries()) {
    await call("file_write", { name: copy.name, path: "/workspace/calc.sh", content: `add() { echo $(($1 ${fixes[i]} $2)); }\n` });
    if (await test(copy.name) === 0) {
      kept = copy.name;
    } else {
      await call("sandbox_delete", { name: copy.name, confirm: true });
    }
  }
  check(kept === "try-2", `kept ${kept}`);

  // The refusals an agent meets.
  await call("file_read", { name: PERSON, path: "/etc/passwd" }, "touches only its own");
  await call("workspace_sync_in", { name: "loop", path: "/etc" }, "not under this server's roots");
  await call("sandbox_delete", { name: "loop" }, "confirm: true");

  // The diff, reviewed, back into the host checkout.
  const diff = await call("workspace_diff", { name: kept });
  check(diff.files.some((f) => f.path === "calc.sh") && diff.diff.includes("+add() { echo $(($1 + $2)); }"), `diff: ${diff.diff}`);
  const accepted = await call("workspace_accept", { name: kept, sha256: diff.sha256 });
  check(accepted.files.includes("calc.sh"), `accepted ${JSON.stringify(accepted)}`);

  for (const name of ["loop", kept]) {
    await call("sandbox_delete", { name, confirm: true });
  }
  const left = await call("sandbox_list", {});
  check(left.sandboxes.length === 0, `left ${JSON.stringify(left)}`);
  console.log(JSON.stringify({ total_ms: Date.now() - started }));
  await client.close();
} catch (err) {
  console.error(`agent loop: ${err.message}`);
  await client.close();
  process.exit(1);
}
