/**
 * Graceful Ctrl-C for long resumable work: the first SIGINT asks the work to checkpoint and stop at its next safe
 * point (`requested()`), a second one quits at once. `dispose()` removes the handler.
 */
export function gracefulInterrupt(unit: string): { requested: () => boolean; dispose: () => void } {
  let stop = false;
  const onInt = () => {
    if (stop) process.exit(130);
    stop = true;
    process.stderr.write(`\nstopping after this ${unit} and writing a checkpoint (Ctrl-C again to quit at once)\n`);
  };
  process.on('SIGINT', onInt);
  return { requested: () => stop, dispose: () => process.off('SIGINT', onInt) };
}
