/**
 * The systemd unit shipped in contrib/: `systemd-analyze verify` (offline) accepts every directive
 * without a warning, and the unit keeps what a mount service needs.
 */
import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const unitFile = path.resolve(import.meta.dirname, "../../contrib/trilio-dms-server.service")

const directives = (text: string) =>
  new Map(text.split("\n").filter((l) => /^[A-Za-z]+=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]))

describe("contrib/trilio-dms-server.service", () => {
  it("systemd-analyze verify accepts it without a warning (an unknown or misspelt directive would be one)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-unit-"))
    try {
      const copy = path.join(dir, "trilio-dms-server.service")
      fs.copyFileSync(unitFile, copy)
      const result = spawnSync("systemd-analyze", ["verify", "--man=no", copy], { encoding: "utf8", timeout: 60_000 })
      assert.strictEqual(result.error, undefined, "systemd-analyze runs (Debian package systemd)")
      assert.strictEqual(result.stderr, "")
      assert.strictEqual(result.status, 0)
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("keeps FUSE daemons across restarts, lets mounts reach the host, allows /dev/fuse and bounds the capabilities", () => {
    const d = directives(fs.readFileSync(unitFile, "utf8"))
    assert.strictEqual(d.get("KillMode"), "process")
    assert.strictEqual(d.get("MountFlags"), "shared")
    assert.strictEqual(d.get("NoNewPrivileges"), "yes")
    assert.strictEqual(d.get("DeviceAllow"), "/dev/fuse rw")
    assert.include(d.get("CapabilityBoundingSet")!.split(" "), "CAP_SYS_ADMIN")
    assert.notInclude(d.get("CapabilityBoundingSet")!.split(" "), "CAP_SYS_MODULE")
    assert.isFalse(d.has("PrivateDevices"), "it would hide /dev/fuse")
    assert.include(JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, "../../package.json"), "utf8")).files, "contrib")
  })
})
