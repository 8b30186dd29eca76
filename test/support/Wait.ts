/**
 * Waiting on conditions, never on time: `until` polls a condition on state
 * the test can observe (a counter, a server's connection count, what a
 * handler recorded) at every turn of the event loop; `within` bounds a
 * promise, so that a test that would hang fails and says what it waited
 * for. Their timeouts only turn a hang into a failure; no test passes
 * because one was long enough.
 *
 * @since 0.1.0
 */

/**
 * Resolves once `ready()` holds, checked at every turn of the event loop;
 * fails after `timeout` ms with `what` (and `detail()` when given, to say
 * where things stood).
 *
 * @since 0.1.0
 */
export const until = (what: string, ready: () => boolean, timeout = 3_000, detail?: () => string): Promise<void> =>
  new Promise((resolve, reject) => {
    let immediate: NodeJS.Immediate | undefined = undefined // the next check
    const timer = setTimeout(() => {
      if (immediate !== undefined) clearImmediate(immediate)
      reject(new Error(`timed out after ${timeout} ms waiting for ${what}${detail === undefined ? "" : `: ${detail()}`}`))
    }, timeout)
    const check = (): void => {
      let done: boolean
      try {
        done = ready()
      } catch (error) {
        clearTimeout(timer)
        return reject(error)
      }
      if (done) {
        clearTimeout(timer)
        resolve()
      } else {
        immediate = setImmediate(check)
      }
    }
    check()
  })

/**
 * `promise`, or a failure naming `what` if it has not settled after `timeout` ms.
 *
 * @since 0.1.0
 */
export const within = <A>(promise: Promise<A>, timeout: number, what: string): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeout} ms waiting for ${what}`)), timeout)
    promise.then(
      (a) => {
        clearTimeout(timer)
        resolve(a)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })
