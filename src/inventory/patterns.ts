/**
 * Patterns shared by the schema and the commands that ask for names and hosts. Kept apart from
 * the schema so those commands register without loading zod (the CLI's start-up time).
 */
export const NAME_RE = /^[a-z0-9][a-z0-9-]*$/;
/** A DNS name or an IP address; nothing a shell or a config file could read as syntax. */
export const HOST_RE =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:)[0-9A-Fa-f:.]+)$/;
