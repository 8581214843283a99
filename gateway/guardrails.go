package gateway

import (
	"fmt"

	"ciss.dev/gateway/internal/api"
	"ciss.dev/gateway/internal/guardrail"
)

func (g *Gateway) openGuardrails() error {
	if g.cfg.GuardrailsFile == "" {
		return nil
	}
	f, err := guardrail.OpenFile(g.cfg.GuardrailsFile)
	if err != nil {
		return &ConfigError{Field: "GuardrailsFile", Err: err}
	}
	g.guardrails = f
	return nil
}

// guardrailsOrNil keeps a nil *guardrail.File from becoming a non-nil interface.
func (g *Gateway) guardrailsOrNil() api.Guardrails {
	if g.guardrails == nil {
		return nil
	}
	return g.guardrails
}

func (g *Gateway) reloadGuardrails() error {
	if g.guardrails == nil {
		return nil
	}
	if err := g.guardrails.Reload(); err != nil {
		return fmt.Errorf("gateway: reload guardrails: %w", err)
	}
	g.log.Info("guardrails reloaded", "file", g.cfg.GuardrailsFile, "rules", len(g.guardrails.Rules().Rules))
	return nil
}
