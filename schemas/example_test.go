package schemas_test

import (
	"errors"
	"fmt"
	"time"

	"ciss.dev/schemas"
)

// A producer wraps its data in a CloudEvents envelope with Marshal; the body is
// what it publishes. The event id and time are fresh on every call.
func ExampleMarshal() {
	started := schemas.TaskStarted{
		TaskID:    schemas.TaskID("0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", "trivy"),
		JobID:     "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d",
		Tenant:    "payments",
		Tool:      "trivy",
		Role:      schemas.RolePrimary,
		Worker:    "worker-trivy-0",
		Attempt:   1,
		StartedAt: time.Date(2025, 1, 14, 9, 30, 1, 0, time.UTC),
	}
	body, err := schemas.Marshal(schemas.TypeTaskStarted, "/ciss/workers/worker-trivy-0", started.TaskID, started)
	if err != nil {
		fmt.Println(err)
		return
	}

	// The consumer's side.
	var got schemas.TaskStarted
	ev, err := schemas.Unmarshal(body, schemas.TypeTaskStarted, &got)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ev.SpecVersion, ev.Type, ev.DataContentType)
	fmt.Println(ev.Subject)
	fmt.Println(got.Tool, got.Attempt, got.StartedAt.Format(time.RFC3339))
	// Output:
	// 1.0 dev.ciss.task.started.v1 application/json
	// 0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d.trivy
	// trivy 1 2025-01-14T09:30:01Z
}

// A consumer that expects one event type uses Unmarshal. An event of another
// type is reported with ErrUnexpectedType, a malformed one with ErrNotCloudEvent.
func ExampleUnmarshal() {
	body := []byte(`{
		"specversion": "1.0",
		"id": "5f0c6e1d2b7a49c3a8e4d1f09b2c3a47",
		"source": "/ciss/gateway",
		"type": "dev.ciss.job.cancel.v1",
		"subject": "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d",
		"time": "2025-01-14T09:31:00Z",
		"datacontenttype": "application/json",
		"data": {"job_id": "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", "tenant": "payments", "by": "alice"}
	}`)

	var cancel schemas.CancelRequest
	if _, err := schemas.Unmarshal(body, schemas.TypeCancelRequest, &cancel); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cancel.Tenant, cancel.By)

	var job schemas.Job
	_, err := schemas.Unmarshal(body, schemas.TypeJobCompleted, &job)
	fmt.Println(errors.Is(err, schemas.ErrUnexpectedType))

	_, err = schemas.Unmarshal([]byte(`{"specversion":"0.3"}`), schemas.TypeJobCompleted, &job)
	fmt.Println(errors.Is(err, schemas.ErrNotCloudEvent))
	// Output:
	// payments alice
	// true
	// true
}

// A consumer of several event types parses the envelope once with ParseEvent
// and decodes the data by type.
func ExampleParseEvent() {
	body, err := schemas.Marshal(schemas.TypeJobCompleted, "/ciss/dispatcher", "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d",
		schemas.Job{ID: "0193a5c2-7f4e-7b21-9c3d-5e8f1a2b3c4d", Status: schemas.StatusFailed,
			Error: &schemas.Error{Code: schemas.CodeTargetNotFound, Message: "manifest unknown"}})
	if err != nil {
		fmt.Println(err)
		return
	}

	ev, err := schemas.ParseEvent(body)
	if err != nil {
		fmt.Println(err)
		return
	}
	switch ev.Type {
	case schemas.TypeJobRequested, schemas.TypeJobCompleted:
		var job schemas.Job
		if err := ev.Decode(ev.Type, &job); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(job.Status, job.Status.Terminal(), job.Error)
	default:
		fmt.Println("ignoring", ev.Type)
	}
	// Output:
	// failed true target_not_found: manifest unknown
}
