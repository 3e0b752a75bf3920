package admission

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/version"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/cel/environment"
)

// compileErrors compiles every expression of the policy as an API server
// compiles a policy written to it: in NewExpressions mode, which offers only
// the CEL libraries of the given compatibility version. (kube-apiserver 1.N
// checks new expressions against version 1.N-1, so that its own previous
// version can still run them after a rollback.)
func compileErrors(t *testing.T, v *version.Version, variables []*validating.Variable, conditions []plugincel.ExpressionAccessor, messages []plugincel.ExpressionAccessor) []error {
	t.Helper()
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(v))
	if err != nil {
		t.Fatal(err)
	}
	decls := plugincel.OptionalVariableDeclarations{HasParams: true, HasAuthorizer: true}
	var errs []error
	for _, vr := range variables {
		if res := compiler.CompileAndStoreVariable(vr, decls, environment.NewExpressions); res.Error != nil {
			errs = append(errs, res.Error)
		}
	}
	errs = append(errs, compiler.CompileCondition(conditions, decls, environment.NewExpressions).CompilationErrors()...)
	noAuthz := plugincel.OptionalVariableDeclarations{HasParams: true}
	errs = append(errs, compiler.CompileCondition(messages, noAuthz, environment.NewExpressions).CompilationErrors()...)
	return errs
}

// The policy only uses CEL that Kubernetes 1.30, the first release with
// admissionregistration.k8s.io/v1 policies, accepts in a new policy (the
// 1.29 library set), so one manifest serves every supported cluster.
func TestPolicyCompilesForKubernetes130(t *testing.T) {
	p := loadManifests(t).Policy
	var variables []*validating.Variable
	for _, v := range p.Spec.Variables {
		variables = append(variables, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	var conditions, messages []plugincel.ExpressionAccessor
	for i := range p.Spec.MatchConditions {
		conditions = append(conditions, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
	}
	for _, v := range p.Spec.Validations {
		conditions = append(conditions, &validating.ValidationCondition{Expression: v.Expression})
		if v.MessageExpression != "" {
			messages = append(messages, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
		}
	}
	if len(variables) == 0 || len(conditions) == 0 || len(messages) == 0 {
		t.Fatal("the policy has no expressions?")
	}
	for _, err := range compileErrors(t, version.MajorMinor(1, 29), variables, conditions, messages) {
		t.Error(err)
	}

	// The check can fail: ip() came with Kubernetes 1.30's library set.
	newer := []plugincel.ExpressionAccessor{&validating.ValidationCondition{Expression: "ip('127.0.0.1').family() == 4"}}
	if len(compileErrors(t, version.MajorMinor(1, 29), nil, newer, nil)) == 0 {
		t.Fatal("an expression using a 1.30 library compiled against the 1.29 library set")
	}
	if errs := compileErrors(t, version.MajorMinor(1, 30), nil, newer, nil); len(errs) != 0 {
		t.Fatalf("ip() against the 1.30 library set: %v", errs)
	}
}
