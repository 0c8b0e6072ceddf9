/**
 * A child process for test/Process.test.ts: prints `ready`, then echoes every line it reads on stdin.
 */
import * as readline from "node:readline"

process.stdout.write("ready\n")
readline.createInterface({ input: process.stdin }).on("line", (line) => void process.stdout.write(`${line}\n`))
