/**
 * One client process of the "two processes" benchmark: 32 jobs over the 8 fan-out targets of one host,
 * for the given seconds, sharing the ledger with the other process. Prints its figures as JSON.
 */
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Dms from "../src/Dms.js"
import { fanOut } from "./common.js"

const args = JSON.parse(process.argv[2] ?? "{}") as { db: string; host: string; seconds: number; url: string }
const rt = ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${args.db}`, rabbitmqUrl: args.url, timeout: 30 }))
const result = await fanOut(rt, 32, 8, [args.host], args.seconds, 200_000_000 + (process.pid % 1000) * 1_000_000)
await rt.dispose()
process.stdout.write(JSON.stringify(result))
process.exit(0)
