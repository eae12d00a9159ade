"use client";

import { useMutation, useQuery } from "@tanstack/react-query";
import { DataTable } from "@/components/data-table";
import { FormError } from "@/components/form";
import { StateBadge } from "@/components/state-badge";
import { Loading, When } from "@/components/when";
import { shownError } from "@/lib/errors";
import { bytes, count, hours, limit, minorUnits, usd } from "@/lib/format";
import { atLeast, useConsole } from "@/lib/org-context";
import { useTRPC } from "@/lib/trpc";
import { dailyTotals, UsageByDayCharts } from "./usage-chart";

const LIMIT_LABELS = [
  ["maxDeployments", "Deployments"],
  ["maxReplicas", "Replicas at once"],
  ["maxCpus", "CPU cores at once"],
  ["maxGpus", "GPUs at once"],
  ["monthlyRequests", "Requests per month"],
  ["requestsPerMinute", "Requests per minute"],
] as const;

/** Plan, payment state, the running cost of this month, usage by day and invoices of one organisation. */
export default function BillingPage() {
  const { org } = useConsole();
  const trpc = useTRPC();
  const isAdmin = atLeast(org.role, "admin");
  const isOwner = atLeast(org.role, "owner");
  const plan = useQuery(trpc.billing.plan.queryOptions({ orgId: org.id }));
  const summary = useQuery(trpc.billing.usageSummary.queryOptions({ orgId: org.id }));
  const usage = useQuery(trpc.usage.byDay.queryOptions({ orgId: org.id }));
  const invoices = useQuery({
    ...trpc.billing.invoices.queryOptions({ orgId: org.id }),
    enabled: isAdmin && !!plan.data?.configured,
  });
  const goTo = { onSuccess: ({ url }: { url: string }) => window.location.assign(url) };
  const checkout = useMutation(trpc.billing.checkout.mutationOptions(goTo));
  const portal = useMutation(trpc.billing.portal.mutationOptions(goTo));

  const p = plan.data;
  const s = summary.data;
  return (
    <>
      <h1>Billing</h1>
      <FormError error={shownError(plan.error ?? summary.error ?? usage.error ?? invoices.error)} />
      {plan.isLoading ? <Loading what="the plan" /> : null}
      {p ? (
        <section className="panel" aria-label="Plan">
          <h2>
            Plan: {p.plan.name} {p.paymentFailed ? <StateBadge state="failed" /> : null}
          </h2>
          {p.configured ? (
            <p>
              Billing status: <strong>active</strong> · subscription {p.subscriptionStatus}
              {p.paymentFailed ? (
                <>
                  {" "}
                  · <strong>last payment failed</strong> <When at={p.paymentFailedAt} />: new deploys are
                  refused until an invoice is paid.
                </>
              ) : null}
            </p>
          ) : (
            <p>
              Billing status: <strong>not configured</strong>. This platform runs without Stripe, so nothing
              is charged; usage is still metered and priced below.
            </p>
          )}
          <p className="muted">
            {count(p.monthlyRequests)} requests this month
            {p.plan.limits.monthlyRequests !== null
              ? ` of ${count(p.plan.limits.monthlyRequests)} included`
              : ""}
            {p.enforced ? "" : " · limits are not enforced on this platform"}.
          </p>
          <DataTable
            label="Plan limits"
            rows={LIMIT_LABELS.map(([key, label]) => ({ key, label, value: p.plan.limits[key] }))}
            rowKey={(r) => r.key}
            columns={[
              { header: "Limit", cell: (r) => r.label },
              { header: "Value", cell: (r) => limit(r.value) },
            ]}
          />
          {p.configured && isOwner ? (
            <div className="row">
              {p.subscriptionStatus !== "active" ? (
                <button
                  type="button"
                  disabled={checkout.isPending}
                  onClick={() => checkout.mutate({ orgId: org.id })}
                >
                  Add payment method
                </button>
              ) : null}
              {p.hasCustomer ? (
                <button
                  type="button"
                  disabled={portal.isPending}
                  onClick={() => portal.mutate({ orgId: org.id })}
                >
                  Open customer portal
                </button>
              ) : null}
            </div>
          ) : null}
          {p.configured && !isOwner ? (
            <p className="muted">Only owners of {org.name} can change the payment method.</p>
          ) : null}
          <FormError error={shownError(checkout.error ?? portal.error)} />
        </section>
      ) : null}

      <h2>Current period</h2>
      {summary.isLoading ? <Loading what="this month's cost" /> : null}
      {s ? (
        <>
          <p>
            <When at={s.periodStart} /> – <When at={s.periodEnd} /> · running cost{" "}
            <strong>{usd(s.totalCost)}</strong> so far
          </p>
          <DataTable
            label="Cost by quantity"
            rows={[
              { name: "Requests", used: count(s.totals.requests), cost: s.costByQuantity.requests },
              { name: "CPU core-hours", used: hours(s.totals.cpuSeconds), cost: s.costByQuantity.cpuSeconds },
              { name: "GPU-hours", used: hours(s.totals.gpuSeconds), cost: s.costByQuantity.gpuSeconds },
              {
                name: "Memory GiB-hours",
                used: hours(s.totals.memoryGibSeconds),
                cost: s.costByQuantity.memoryGibSeconds,
              },
              {
                name: "Build hours",
                used: hours(s.totals.buildSeconds),
                cost: s.costByQuantity.buildSeconds,
              },
              { name: "Egress", used: bytes(s.totals.egressBytes), cost: s.costByQuantity.egressBytes },
            ]}
            rowKey={(r) => r.name}
            columns={[
              { header: "Quantity", cell: (r) => r.name },
              { header: "Used", cell: (r) => r.used },
              { header: "Cost", cell: (r) => usd(r.cost) },
            ]}
          />
          <h3>Cost by deployment</h3>
          <DataTable
            label="Cost by deployment"
            empty="No usage this month yet: deploy something and send it a request."
            rows={s.byDeployment}
            rowKey={(d) => d.deploymentId ?? "org"}
            columns={[
              { header: "Deployment", cell: (d) => d.name ?? (d.deploymentId ? "deleted" : "builds (org)") },
              { header: "Requests", cell: (d) => count(d.quantities.requests) },
              { header: "Errors", cell: (d) => count(d.errors) },
              { header: "CPU core-hours", cell: (d) => hours(d.quantities.cpuSeconds) },
              { header: "GPU-hours", cell: (d) => hours(d.quantities.gpuSeconds) },
              { header: "Cost", cell: (d) => usd(d.cost) },
            ]}
          />
        </>
      ) : null}

      <h2>Usage by day (last 30 days)</h2>
      {usage.isLoading ? <Loading what="usage" /> : null}
      {usage.data && p ? (
        usage.data.length === 0 ? (
          <p className="panel empty">No metered usage in the last 30 days. Usage is rolled up every hour.</p>
        ) : (
          <UsageByDayCharts days={dailyTotals(usage.data, p.plan.prices)} />
        )
      ) : null}

      <h2>Invoices</h2>
      {!p?.configured ? (
        <p className="panel empty">No invoices: billing is not configured on this platform.</p>
      ) : !isAdmin ? (
        <p className="panel muted">Admins and owners of {org.name} can see invoices.</p>
      ) : (
        <DataTable
          label="Invoices"
          empty="No invoices yet."
          rows={invoices.data}
          rowKey={(i) => i.id}
          columns={[
            { header: "Invoice", cell: (i) => i.number ?? i.id },
            { header: "Period", cell: (i) => <When at={i.periodStart} /> },
            { header: "Status", cell: (i) => (i.status ? <StateBadge state={i.status} /> : "—") },
            { header: "Amount due", cell: (i) => minorUnits(i.amountDue, i.currency) },
            { header: "Paid", cell: (i) => minorUnits(i.amountPaid, i.currency) },
            {
              header: "Links",
              cell: (i) => (
                <>
                  {i.hostedInvoiceUrl ? <a href={i.hostedInvoiceUrl}>View</a> : null}{" "}
                  {i.pdfUrl ? <a href={i.pdfUrl}>PDF</a> : null}
                </>
              ),
            },
          ]}
        />
      )}
    </>
  );
}
