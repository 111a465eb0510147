/**
 * A failure caused by the user's input (a missing file, a bad flag, a corrupt shard): the CLI prints its message
 * without a stack trace and exits 1. The message names the file and the fix.
 */
export class UserError extends Error {
  override name = 'UserError';
}
