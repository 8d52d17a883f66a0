/**
 * The nginx balancer: render the upstream for a given moment (who is drained, who is not in
 * yet), push it only if it changed, prove it with `nginx -t` (restoring the previous file if it
 * fails), then reload. Reload is graceful: in-flight requests and streams finish on old workers.
 */
import { CliError } from '../errors.js';
import { files, nginx } from '../remote/commands.js';
import { renderCluster, type RenderOptions } from '../render/render.js';
import type { TemplateSources } from '../render/templates.js';
import { BALANCER, type Session } from './session.js';

export class Balancer {
  private current: string | undefined;
  private loaded = false;

  constructor(
    private readonly session: Session,
    private readonly templates: TemplateSources,
  ) {}

  get enabled(): boolean {
    return this.session.balancerTarget() !== undefined;
  }

  render(opts: RenderOptions = {}): string {
    return renderCluster(this.session.inv, this.templates, opts).balancer.content;
  }

  /** What the balancer has now (undefined: no file). */
  async read(): Promise<string | undefined> {
    const ex = this.session.onBalancer();
    if (!ex) return undefined;
    if (!this.loaded) {
      this.current = (await ex.readFile(this.session.inv.loadBalancer.configPath))?.toString('utf8');
      this.loaded = true;
    }
    return this.current;
  }

  /** Returns whether the file changed. */
  async push(opts: RenderOptions = {}): Promise<boolean> {
    const ex = this.session.onBalancer();
    if (!ex) return false;
    const path = this.session.inv.loadBalancer.configPath;
    const next = this.render(opts);
    const previous = await this.read();
    if (next === previous) return false;
    await ex.upload(path, next, 0o644);
    const test = await ex.exec(nginx.test(), { allowFailure: true });
    if (test.code !== 0) {
      if (previous === undefined) await ex.exec(files.remove(path));
      else await ex.upload(path, previous, 0o644);
      throw new CliError(`nginx -t rejected the new configuration (the previous file is back): ${test.stderr.trim().split('\n').slice(-2).join(' ')}`, {
        node: BALANCER,
        hint: 'if you override nginx.conf.hbs, check it with newapi-cluster render; otherwise run nginx -t on the balancer',
      });
    }
    await ex.exec(nginx.reload());
    this.current = next;
    return true;
  }
}
