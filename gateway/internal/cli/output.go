package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"ciss.dev/gateway/internal/report"
	"ciss.dev/schemas"
)

// maxTitle bounds the title column so that a table fits a CI log line.
const maxTitle = 60

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func tool(j *schemas.Job) string {
	t := strings.TrimSpace(j.Tool + " " + j.ToolVersion)
	if j.CacheHit {
		t += " (cached result)"
	}
	return orDash(t)
}

func target(j *schemas.Job) string { return orDash(j.Target.Image) }

func stamp(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// writeStatus prints one job as name/value lines.
func writeStatus(w io.Writer, j *schemas.Job) error {
	tw := newTable(w)
	created := j.CreatedAt
	rows := [][2]string{
		{"job", j.ID}, {"type", j.Type}, {"target", target(j)}, {"status", string(j.Status)},
		{"tool", tool(j)}, {"created", stamp(&created)}, {"started", stamp(j.StartedAt)}, {"finished", stamp(j.FinishedAt)},
	}
	if j.Result != nil {
		rows = append(rows, [2]string{"findings", summaryLine(j.Result.Summary)})
	}
	if j.Error != nil {
		rows = append(rows, [2]string{"error", j.Error.Code + ": " + j.Error.Message})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func summaryLine(s schemas.Summary) string {
	return fmt.Sprintf("%d (critical %d, high %d, medium %d, low %d, unknown %d)",
		s.Total(), s.Critical, s.High, s.Medium, s.Low, s.Unknown)
}

// writeSummary prints the counts by severity.
func writeSummary(w io.Writer, j *schemas.Job) error {
	var s schemas.Summary
	if j.Result != nil {
		s = j.Result.Summary
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "SEVERITY\tCOUNT\n")
	for _, r := range []struct {
		name string
		n    int
	}{{"CRITICAL", s.Critical}, {"HIGH", s.High}, {"MEDIUM", s.Medium}, {"LOW", s.Low}, {"UNKNOWN", s.Unknown}, {"TOTAL", s.Total()}} {
		fmt.Fprintf(tw, "%s\t%d\n", r.name, r.n)
	}
	return tw.Flush()
}

// writeJobTable prints a finished job: what was scanned, the counts by
// severity, then the top findings, most severe first.
func writeJobTable(w io.Writer, j *schemas.Job, findings []report.Finding, top int) error {
	fmt.Fprintf(w, "job %s  %s  %s\n", j.ID, j.Type, target(j))
	fmt.Fprintf(w, "tool %s", tool(j))
	if j.Result != nil && j.Result.DBVersion != "" {
		fmt.Fprintf(w, ", db %s", j.Result.DBVersion)
	}
	fmt.Fprintf(w, "\n\n")
	if err := writeSummary(w, j); err != nil {
		return err
	}
	if len(findings) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintf(tw, "SEVERITY\tID\tPACKAGE\tINSTALLED\tFIXED\tTITLE\n")
	shown := findings
	if top >= 0 && len(shown) > top {
		shown = shown[:top]
	}
	for _, f := range shown {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.ID, orDash(f.Package), orDash(f.InstalledVersion),
			orDash(f.FixedVersion), orDash(truncate(f.Title, maxTitle)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(findings) - len(shown); n > 0 {
		fmt.Fprintf(w, "… and %d more (--top N, or --output sarif|json for the full report)\n", n)
	}
	return nil
}

// writeJobsTable prints one line per job.
func writeJobsTable(w io.Writer, jobs []schemas.Job) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "ID\tTYPE\tSTATUS\tFINDINGS C/H/M/L/U\tCREATED\tTARGET\n")
	for i := range jobs {
		j := &jobs[i]
		findings := "-"
		if j.Result != nil {
			s := j.Result.Summary
			findings = fmt.Sprintf("%d/%d/%d/%d/%d", s.Critical, s.High, s.Medium, s.Low, s.Unknown)
		}
		created := j.CreatedAt
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Type, j.Status, findings, stamp(&created), target(j))
	}
	return tw.Flush()
}
