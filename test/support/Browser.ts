/**
 * Headless Chromium for tests: Debian's `chromium` (installed by `.ci/run`
 * when missing) driven by `playwright-core`, with the flags this machine's
 * closed network needs. A test that needs it fails when it cannot launch.
 *
 * @since 0.2.0
 */
import { type Browser, chromium } from "playwright-core"

/**
 * Launches headless Chromium; `extraArgs` adds flags (e.g.
 * `--ignore-certificate-errors` for a test certificate).
 *
 * @since 0.2.0
 */
export const launch = (extraArgs: ReadonlyArray<string> = []): Promise<Browser> =>
  chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      ...extraArgs
    ]
  })
