/**
 * A child process for test/Process.test.ts: prints `ready`, then echoes every line it reads on stdin;
 * `exit <code>` prints `bye` and exits with that code.
 */
import * as readline from "node:readline"

process.stdout.write("ready\n")
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.startsWith("exit ")) process.stdout.write("bye\n", () => process.exit(Number(line.slice(5))))
  else process.stdout.write(`${line}\n`)
})
