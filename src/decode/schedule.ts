// How many tokens each step commits, for the fixed-step policies.

/** LLaDA: split n masks over `steps` steps; the first n % steps steps take one more. */
export function transferCounts(n: number, steps: number): number[] {
  const base = Math.floor(n / steps);
  const rem = n % steps;
  return Array.from({ length: steps }, (_, i) => base + (i < rem ? 1 : 0));
}

/** Dream: timestep i of linspace(1, eps, steps + 1). */
export function dreamTimestep(i: number, steps: number, eps: number): number {
  return 1 + ((eps - 1) * i) / steps;
}

/** Dream: at step i of `steps` with n masks left, commit floor(n * (1 - s/t)); all at the last step. */
export function dreamCount(n: number, i: number, steps: number, eps: number): number {
  if (i >= steps - 1) return n;
  return Math.floor(n * (1 - dreamTimestep(i + 1, steps, eps) / dreamTimestep(i, steps, eps)));
}
