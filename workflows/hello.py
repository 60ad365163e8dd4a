"""hello: the smallest useful workflow, for trying the engine without a model."""
from pydantic import BaseModel, Field

from engine import Loop, Sequence, Task, workflow


class HelloInput(BaseModel):
    name: str = Field("world", description="who to greet")
    times: int = Field(3, ge=1, le=100, description="how many greetings")


class Greeting(BaseModel):
    text: str
    count: int


def greet(ctx) -> Greeting:
    prev = ctx.latest("greet")
    n = (prev.count if prev else 0) + 1
    ctx.log(f"greeting {n}")
    return Greeting(text=f"hello, {ctx.input.name} ({n})", count=n)


@workflow(name="hello", input=HelloInput)
def hello(ctx):
    """Greets someone a few times in a loop: no model needed."""
    last = ctx.latest("greet")
    return Sequence(
        Loop("greetings", Task("greet", run=greet, output=Greeting),
             until=last is not None and last.count >= ctx.input.times, max_iterations=100),
        Task("done", value={"greetings": ctx.input.times}),
    )
