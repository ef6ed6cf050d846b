package edge

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
	adminv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/admin/v1"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/routing"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// PendingRestartHeader is the response header of GetConfig (gRPC metadata;
// an HTTP header of the same name for REST) that names, comma-separated,
// the configured fields that differ from the running ones and need a
// restart. Absent when there are none.
const PendingRestartHeader = "gatehouse-pending-restart"

// defaultCandidateName names a ValidateConfig candidate in its error lines
// when the request gives no name.
const defaultCandidateName = "candidate.yaml"

// GetConfig returns the effective configuration, secrets redacted (see
// redact), and the state of the reloads.
func (a *adminService) GetConfig(ctx context.Context, _ *adminv1.GetConfigRequest) (*adminv1.GetConfigResponse, error) {
	st := a.g.ReloadStats()
	cfg := proto.Clone(a.g.Config()).(*configv1.Config)
	redact(cfg.ProtoReflect())
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cfg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gatehouse: config as JSON: %v", err)
	}
	if len(st.PendingRestart) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs(PendingRestartHeader, strings.Join(st.PendingRestart, ", ")))
	}
	return &adminv1.GetConfigResponse{
		ConfigJson:     string(js),
		Source:         st.Source,
		LoadedAt:       st.LoadedAt.UTC().Format(time.RFC3339Nano),
		Reloads:        st.Reloads,
		ReloadFailures: st.Failures,
		LastErrors:     st.LastErrors,
	}, nil
}

// ValidateConfig checks a candidate as a reload would (the loader's rules,
// then the route table compiled) and applies nothing.
func (a *adminService) ValidateConfig(_ context.Context, req *adminv1.ValidateConfigRequest) (*adminv1.ValidateConfigResponse, error) {
	name := req.GetName()
	if name == "" {
		name = defaultCandidateName
	}
	cfg, err := config.Parse(name, []byte(req.GetContent()))
	if err == nil {
		_, err = routing.NewTable(cfg.GetRoutes())
	}
	if err != nil {
		return &adminv1.ValidateConfigResponse{Errors: refused(name, err).Lines}, nil
	}
	return &adminv1.ValidateConfigResponse{Valid: true}, nil
}

// ReloadConfig rereads the config file and applies it. A config that does
// not pass is FAILED_PRECONDITION with one google.rpc.BadRequest field
// violation per problem; the configuration in force keeps serving.
func (a *adminService) ReloadConfig(ctx context.Context, _ *adminv1.ReloadConfigRequest) (*adminv1.ReloadConfigResponse, error) {
	err := a.g.reloadFile(ctx, "admin")
	if err != nil {
		return nil, reloadStatus(err)
	}
	return &adminv1.ReloadConfigResponse{
		LoadedAt: a.g.ReloadStats().LoadedAt.UTC().Format(time.RFC3339Nano),
		Routes:   int32(len(a.g.router.Table().Routes())),
	}, nil
}

// reloadStatus turns a reload error into a status.
func reloadStatus(err error) error {
	if errors.Is(err, errNoConfigFile) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	var rerr *ReloadError
	if !errors.As(err, &rerr) {
		return status.FromContextError(err).Err()
	}
	st := status.New(codes.FailedPrecondition, rerr.Error())
	br := &errdetails.BadRequest{}
	var cerr *config.Error
	if errors.As(rerr, &cerr) {
		for _, fe := range cerr.Errors {
			field := fe.Path
			if field == "" && fe.Line > 0 {
				field = "line " + strconv.Itoa(fe.Line)
			}
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
				Field:       field,
				Description: fe.Reason,
			})
		}
	} else {
		for _, l := range rerr.Lines {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Description: l})
		}
	}
	if d, derr := st.WithDetails(br); derr == nil {
		st = d
	}
	return st.Err()
}
