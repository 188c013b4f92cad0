// Turns vitest's JSON report of E2B's JS SDK suite into a markdown
// table: a row a test, its file, its state and, for a failure, the first
// line of why; then the counts.
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

const report = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const counts = {}
console.log('| file | test | result | why |')
console.log('|---|---|---|---|')
for (const file of report.testResults.sort((a, b) => a.name.localeCompare(b.name))) {
  const name = relative(process.cwd(), file.name).replace(/^.*?tests\//, 'tests/')
  if (file.assertionResults.length === 0) {
    const why = (file.message || '').split('\n')[0].slice(0, 160)
    console.log(`| ${name} | (the file) | ${file.status} | ${why.replaceAll('|', '\\|')} |`)
    counts[file.status] = (counts[file.status] || 0) + 1
    continue
  }
  for (const t of file.assertionResults) {
    counts[t.status] = (counts[t.status] || 0) + 1
    const why = (t.failureMessages?.[0] || '').split('\n')[0].slice(0, 160).replaceAll('|', '\\|')
    console.log(`| ${name} | ${t.fullName.replaceAll('|', '\\|')} | ${t.status} | ${why} |`)
  }
}
console.log('')
console.log(Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', '))
